"""Response caches: an exact tier (hash of everything that shapes the answer) and a semantic tier
(the last question matched by meaning among entries of the same context, then verified), stored in
SQLite under $VELOLLM_CACHE or, for the exact tier, in a shared Redis. Imports nothing of api/proxy."""
