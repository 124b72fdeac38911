"""Word lists the verifier reads: function words, negations, number words, polar (opposite) pairs,
and the prepositions that give a relation its direction. General English, not tuned to any test set."""

from __future__ import annotations

# Words whose presence or absence does not change what is asked (question frames, pronouns, fillers).
STOPWORDS = frozenset("""
a an the this that these those it its it's i me my mine we us our you your yours he him his she her they them
their there here what which who whom whose when where why how whats whos hows is are was were be been being am
do does did done doing can could would should will shall may might must have has had having get got gets of in on
at by for with about as into onto from to up out off over under again then than so such too very just also only
and or but if because while until please kindly tell show give let know want wanting need needs like some any
all each every one ones thing things way ways way's best good simple simply quick quickly easy easily really
actually possible me? explain describe define definition meaning mean means term terms summarize summary
help question answer answers info information detail details brief briefly short exactly anyone someone
go going i'm im i've ive you're youre can't
""".split())

NEGATIONS = frozenset({"not", "no", "never", "without", "none", "nobody", "nothing", "nowhere", "neither", "nor",
                       "cannot", "non", "lack", "lacking"})

# Contractions expanded before tokenizing (so "doesn't" carries a negation and "what's" its verb).
CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not",
                "n't": " not", "'re": " are", "'ve": " have", "'ll": " will", "'d": " would", "'m": " am"}

UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
         "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
         "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12,
         "half": 0.5, "twice": 2, "thrice": 3, "double": 2, "triple": 3, "single": 1}
SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000,
          "trillion": 1_000_000_000_000, "k": 1_000, "m": 1_000_000, "bn": 1_000_000_000}
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
            "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "twentieth": 20, "hundredth": 100,
            "last": -1, "penultimate": -2}

# Pairs of opposites (either order). Prefix opposites (enable/disable, lock/unlock, import/export) are
# found by rule in verifier.py, so they are not listed here.
OPPOSITES = [
    ("increase", "decrease"), ("increase", "reduce"), ("increase", "lower"), ("raise", "lower"), ("raise", "reduce"),
    ("grow", "shrink"), ("expand", "collapse"), ("gain", "lose"), ("win", "lose"), ("add", "remove"),
    ("add", "delete"), ("add", "subtract"), ("plus", "minus"), ("multiply", "divide"), ("insert", "delete"),
    ("create", "delete"), ("create", "destroy"), ("build", "destroy"), ("open", "close"), ("open", "shut"),
    ("start", "stop"), ("start", "end"), ("start", "finish"), ("begin", "end"), ("begin", "finish"),
    ("first", "last"), ("before", "after"), ("early", "late"), ("earlier", "later"), ("earliest", "latest"),
    ("past", "future"), ("old", "new"), ("older", "newer"), ("oldest", "newest"), ("young", "old"),
    ("younger", "older"), ("youngest", "oldest"), ("big", "small"), ("large", "small"), ("big", "little"),
    ("bigger", "smaller"), ("larger", "smaller"), ("biggest", "smallest"), ("largest", "smallest"),
    ("long", "short"), ("longer", "shorter"), ("longest", "shortest"), ("tall", "short"), ("taller", "shorter"),
    ("tallest", "shortest"), ("high", "low"), ("higher", "lower"), ("highest", "lowest"), ("heavy", "light"),
    ("heavier", "lighter"), ("heaviest", "lightest"), ("fast", "slow"), ("faster", "slower"), ("fastest", "slowest"),
    ("quick", "slow"), ("hot", "cold"), ("hotter", "colder"), ("hottest", "coldest"), ("warm", "cool"),
    ("warmer", "cooler"), ("wet", "dry"), ("hard", "soft"), ("harder", "softer"), ("thick", "thin"),
    ("wide", "narrow"), ("deep", "shallow"), ("strong", "weak"), ("stronger", "weaker"), ("strongest", "weakest"),
    ("cheap", "expensive"), ("cheapest", "expensive"), ("rich", "poor"), ("richest", "poorest"),
    ("good", "bad"), ("better", "worse"), ("best", "worst"), ("positive", "negative"), ("pro", "con"),
    ("pros", "cons"), ("benefit", "drawback"), ("benefit", "risk"), ("advantage", "drawback"),
    ("strength", "weakness"), ("true", "false"), ("yes", "no"), ("right", "wrong"), ("correct", "incorrect"),
    ("accept", "reject"), ("accept", "decline"), ("allow", "deny"), ("allow", "block"), ("allow", "forbid"),
    ("allow", "prevent"), ("permit", "forbid"), ("include", "exclude"), ("inclusive", "exclusive"),
    ("push", "pull"), ("send", "receive"), ("give", "take"), ("lend", "borrow"), ("buy", "sell"),
    ("import", "export"), ("input", "output"), ("inbound", "outbound"), ("incoming", "outgoing"),
    ("arrive", "depart"), ("arrival", "departure"), ("enter", "exit"), ("entry", "exit"), ("come", "go"),
    ("up", "down"), ("upper", "lower"), ("uppercase", "lowercase"), ("above", "below"), ("over", "under"),
    ("in", "out"), ("inside", "outside"), ("inner", "outer"), ("internal", "external"), ("on", "off"),
    ("left", "right"), ("north", "south"), ("east", "west"), ("front", "back"), ("forward", "backward"),
    ("top", "bottom"), ("head", "tail"), ("ascending", "descending"), ("asc", "desc"), ("ascend", "descend"),
    ("min", "max"), ("minimum", "maximum"), ("minimize", "maximize"), ("most", "least"), ("more", "less"),
    ("more", "fewer"), ("many", "few"), ("all", "none"), ("always", "never"), ("everything", "nothing"),
    ("maximal", "minimal"), ("majority", "minority"), ("horizontal", "vertical"), ("public", "private"),
    ("male", "female"), ("man", "woman"), ("men", "women"), ("boy", "girl"), ("husband", "wife"),
    ("father", "mother"), ("son", "daughter"), ("brother", "sister"), ("king", "queen"), ("day", "night"),
    ("morning", "evening"), ("sunrise", "sunset"), ("summer", "winter"), ("spring", "autumn"),
    ("spring", "fall"), ("light", "dark"), ("black", "white"), ("love", "hate"), ("like", "dislike"),
    ("happy", "sad"), ("easy", "difficult"), ("easy", "hard"), ("simple", "complex"), ("safe", "dangerous"),
    ("healthy", "unhealthy"), ("legal", "illegal"), ("pass", "fail"), ("success", "failure"),
    ("succeed", "fail"), ("online", "offline"), ("encode", "decode"), ("serialize", "deserialize"),
    ("compress", "decompress"), ("zip", "unzip"), ("mount", "unmount"), ("freeze", "thaw"),
    ("attach", "detach"), ("connect", "disconnect"), ("subscribe", "unsubscribe"), ("follow", "unfollow"),
    ("upload", "download"), ("upgrade", "downgrade"), ("upstream", "downstream"), ("uphill", "downhill"),
    ("teach", "learn"), ("parent", "child"), ("employer", "employee"), ("buyer", "seller"), ("sender",
    "receiver"), ("client", "server"), ("host", "guest"), ("debit", "credit"), ("profit", "loss"),
    ("income", "expense"), ("asset", "liability"), ("bull", "bear"), ("bullish", "bearish"), ("long", "short"),
    ("acid", "base"), ("acidic", "alkaline"), ("sweet", "sour"), ("raw", "cooked"), ("full", "empty"),
    ("hide", "show"), ("show", "hide"), ("visible", "hidden"), ("mute", "unmute"), ("lock", "unlock"),
    ("sleep", "wake"), ("asleep", "awake"), ("alive", "dead"), ("birth", "death"), ("born", "died"),
    ("fat", "lean"), ("fatten", "slim"), ("before", "since"), ("from", "to"), ("previous", "next"),
    ("prev", "next"), ("first", "final"), ("initial", "final"), ("beginning", "end"), ("cause", "effect"),
    ("question", "answer"), ("odd", "even"), ("prime", "composite"), ("rural", "urban"), ("indoor", "outdoor"),
    ("domestic", "international"), ("local", "remote"), ("local", "global"), ("sync", "async"),
    ("synchronous", "asynchronous"), ("static", "dynamic"), ("mutable", "immutable"), ("implicit", "explicit"),
    ("absolute", "relative"), ("vertical", "horizontal"), ("major", "minor"), ("plural", "singular"),
    ("celsius", "fahrenheit"), ("vegan", "carnivore"), ("agree", "disagree"), ("ally", "enemy"),
    ("friend", "enemy"), ("victory", "defeat"), ("attack", "defend"), ("offense", "defense"),
    ("offensive", "defensive"), ("pros", "cons"), ("up", "off"),
]

# Affixes that turn a word into its opposite when the rest of the word is the same (enable/disable,
# install/uninstall, import/export, upload/download, increase/decrease, maximum/minimum).
POLAR_PREFIXES = ("", "un", "dis", "in", "im", "il", "ir", "non", "de", "en", "em", "ex", "up", "down", "anti",
                  "pro", "pre", "post", "over", "under", "out", "max", "min", "mis", "a")
POLAR_SUFFIXES = (("ful", "less"),)

# Words that give a relation between two things its direction: swapping what stands on either side
# of one of these asks another question ("5 km to miles", "from Boston to New York", "bigger than").
DIRECTION_WORDS = frozenset({"to", "into", "from", "than", "onto", "toward", "towards", "->", "→", "=>",
                             "before", "after", "over", "above", "below", "beat", "beats", "conquer", "conquered",
                             "defeat", "defeated", "cause", "causes", "caused", "affect", "affects", "kill",
                             "killed", "owe", "owes", "pay", "pays", "send", "sends", "sent", "follow", "follows",
                             "love", "loves", "hate", "hates", "ate", "eat", "eats", "chase", "chases", "bought",
                             "sold", "married", "replace", "replaces"})

# Closed classes whose members are interchangeable in a sentence but never in meaning: a unit, a
# weekday, a month, a language, a colour, a planet. A member on one side must be on the other (as the
# same canonical word: "km" = "kilometre"), written in any case ("translate to german" / "to French").
_UNIT_MEMBERS = {
    "km": "kilometer kilometers kilometre kilometres km kms", "mile": "mile miles mi", "meter": "meter meters metre "
    "metres m", "centimeter": "centimeter centimeters centimetre centimetres cm", "millimeter": "millimeter "
    "millimeters millimetre millimetres mm", "inch": "inch inches in.", "foot": "foot feet ft", "yard": "yard yards yd",
    "kilogram": "kilogram kilograms kilo kilos kg kgs", "gram": "gram grams g", "pound": "pound pounds lb lbs",
    "ounce": "ounce ounces oz", "stone": "stone stones", "ton": "ton tons tonne tonnes", "liter": "liter liters "
    "litre litres l", "milliliter": "milliliter milliliters millilitre millilitres ml", "gallon": "gallon gallons gal",
    "cup": "cup cups", "tablespoon": "tablespoon tablespoons tbsp", "teaspoon": "teaspoon teaspoons tsp",
    "pint": "pint pints", "quart": "quart quarts", "celsius": "celsius centigrade °c", "fahrenheit": "fahrenheit °f",
    "kelvin": "kelvin", "second": "sec secs seconds", "minute": "minute minutes min mins", "hour": "hour hours hr hrs",
    "day": "day days", "week": "week weeks", "month": "month months", "year": "year years yr yrs",
    "decade": "decade decades", "century": "century centuries", "dollar": "dollar dollars usd $",
    "euro": "euro euros eur €", "yen": "yen jpy ¥", "sterling": "gbp £ sterling", "rupee": "rupee rupees inr",
    "byte": "byte bytes", "kilobyte": "kb kilobyte kilobytes", "megabyte": "mb megabyte megabytes",
    "gigabyte": "gb gigabyte gigabytes", "terabyte": "tb terabyte terabytes", "mph": "mph", "kph": "kph km/h",
    "acre": "acre acres", "hectare": "hectare hectares", "calorie": "calorie calories kcal", "joule": "joule joules",
    "watt": "watt watts w", "volt": "volt volts v",
}
_CLASS_MEMBERS = {
    "monday": "monday mon", "tuesday": "tuesday tue tues", "wednesday": "wednesday wed", "thursday": "thursday thu "
    "thurs", "friday": "friday fri", "saturday": "saturday sat", "sunday": "sunday sun",
    "today": "today tonight", "tomorrow": "tomorrow", "yesterday": "yesterday",
    "january": "january jan", "february": "february feb", "march": "march", "april": "april apr", "june": "june jun",
    "july": "july jul", "august": "august aug", "september": "september sep sept", "october": "october oct",
    "november": "november nov", "december": "december dec",
    "english": "english", "french": "french", "spanish": "spanish", "german": "german", "italian": "italian",
    "portuguese": "portuguese", "dutch": "dutch", "russian": "russian", "chinese": "chinese mandarin",
    "japanese": "japanese", "korean": "korean", "arabic": "arabic", "hindi": "hindi", "turkish": "turkish",
    "polish": "polish", "swedish": "swedish", "greek": "greek", "hebrew": "hebrew", "latin": "latin",
    "red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "orange": "orange", "purple": "purple violet",
    "pink": "pink", "brown": "brown", "black": "black", "white": "white", "gray": "gray grey",
    "mercury": "mercury", "venus": "venus", "mars": "mars", "jupiter": "jupiter", "saturn": "saturn",
    "uranus": "uranus", "neptune": "neptune", "pluto": "pluto",
}
CLOSED_CLASS = {member: canonical for canonical, members in _CLASS_MEMBERS.items() for member in members.split()}
# Units count only in a question about quantities (a number, "how many/much", "convert"): elsewhere
# "a cup of tea" or "a second opinion" are plain nouns.
UNIT_NAMES = {member: canonical for canonical, members in _UNIT_MEMBERS.items() for member in members.split()}
QUANTITY_CUES = frozenset({"many", "much", "convert", "conversion", "equal", "equals", "equivalent"})
# Short forms that are also everyday words: only when they stand right after a number ("5 m", "3 in.").
UNIT_ONLY_AFTER_NUMBER = frozenset({"m", "g", "l", "w", "v", "mi", "in.", "min", "sec", "sat", "sun", "mon", "wed",
                                    "fri", "jan", "mar", "may", "jun", "oct", "dec", "aug", "sep", "nov", "apr", "feb",
                                    "tue", "thu", "yd", "ft", "gal", "$", "€", "£", "¥"})
