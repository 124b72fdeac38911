"""Response caches: an exact tier (hash of everything that shapes the answer) and a semantic tier
(the last question matched by meaning among entries of the same context, then verified), stored in
SQLite under $VELOLLM_CACHE or, for the exact tier, in a shared Redis. Imports nothing of api/proxy: the
server passes the middleware `identify` (model name -> what it stands for now: velollm/api/model_identity.py),
which both keys hold, so a name that comes to point at another model never answers with the old one; the old
one's entries are then deleted from every tier in the background (stale_purge.py)."""
