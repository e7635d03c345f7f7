"""A synthetic English -> German-like parallel corpus, made by a small grammar.

Hard enough that a tiny model stays well below BLEU 100: German-like gender and case
agreement of articles and adjectives, subject-verb agreement, verb-second inversion
after a fronted adverb, verb-final subordinate clauses, and perfect-tense verb brackets.
Seeded: the same seed gives the same corpus. Sentences are detokenized plain text (commas and
the final full stop attach to the word before them), as real references are: sacreBLEU
tokenizes what it scores, and warns about references that end in " .".
"""
import random

# English noun: (German noun, gender, German plural)
NOUNS = {
    "man": ("mann", "m", "männer"), "woman": ("frau", "f", "frauen"), "child": ("kind", "n", "kinder"),
    "dog": ("hund", "m", "hunde"), "cat": ("katze", "f", "katzen"), "horse": ("pferd", "n", "pferde"),
    "teacher": ("lehrer", "m", "lehrer"), "doctor": ("ärztin", "f", "ärztinnen"), "bird": ("vogel", "m", "vögel"),
    "girl": ("mädchen", "n", "mädchen"), "boy": ("junge", "m", "jungen"), "farmer": ("bauer", "m", "bauern"),
    "car": ("auto", "n", "autos"), "book": ("buch", "n", "bücher"), "table": ("tisch", "m", "tische"),
    "door": ("tür", "f", "türen"), "house": ("haus", "n", "häuser"), "apple": ("apfel", "m", "äpfel"),
    "letter": ("brief", "m", "briefe"), "ball": ("ball", "m", "bälle"), "flower": ("blume", "f", "blumen"),
    "tree": ("baum", "m", "bäume"), "city": ("stadt", "f", "städte"), "song": ("lied", "n", "lieder"),
    "picture": ("bild", "n", "bilder"), "street": ("straße", "f", "straßen"), "chair": ("stuhl", "m", "stühle"),
    "window": ("fenster", "n", "fenster"), "student": ("studentin", "f", "studentinnen"),
    "friend": ("freund", "m", "freunde"), "neighbor": ("nachbarin", "f", "nachbarinnen"),
    "bread": ("brot", "n", "brote"), "cup": ("tasse", "f", "tassen"), "river": ("fluss", "m", "flüsse"),
}
ANIMATE = ["man", "woman", "child", "dog", "cat", "horse", "teacher", "doctor", "bird", "girl", "boy",
           "farmer", "student", "friend", "neighbor"]
# English verb: (3sg, 3pl/base, past participle) -> German (3sg, 3pl, participle, auxiliary)
VERBS = {
    "see": (("sees", "see", "seen"), ("sieht", "sehen", "gesehen")),
    "find": (("finds", "find", "found"), ("findet", "finden", "gefunden")),
    "buy": (("buys", "buy", "bought"), ("kauft", "kaufen", "gekauft")),
    "carry": (("carries", "carry", "carried"), ("trägt", "tragen", "getragen")),
    "paint": (("paints", "paint", "painted"), ("malt", "malen", "gemalt")),
    "like": (("likes", "like", "liked"), ("mag", "mögen", "gemocht")),
    "hold": (("holds", "hold", "held"), ("hält", "halten", "gehalten")),
    "seek": (("seeks", "seek", "sought"), ("sucht", "suchen", "gesucht")),
    "wash": (("washes", "wash", "washed"), ("wäscht", "waschen", "gewaschen")),
    "build": (("builds", "build", "built"), ("baut", "bauen", "gebaut")),
    "open": (("opens", "open", "opened"), ("öffnet", "öffnen", "geöffnet")),
    "read": (("reads", "read", "read"), ("liest", "lesen", "gelesen")),
}
ADJECTIVES = {"big": "groß", "small": "klein", "old": "alt", "young": "jung", "red": "rot", "green": "grün",
              "happy": "glücklich", "tired": "müde", "new": "neu", "beautiful": "schön", "quiet": "leise",
              "strong": "stark", "clever": "klug", "brown": "braun", "white": "weiß", "fast": "schnell"}
ADVERBS = {"today": "heute", "yesterday": "gestern", "often": "oft", "now": "jetzt", "sometimes": "manchmal",
           "tomorrow": "morgen", "here": "hier", "there": "dort"}
PLACES = {"in the garden": "im garten", "in the city": "in der stadt", "at home": "zu hause",
          "near the river": "am fluss", "on the street": "auf der straße", "in the park": "im park"}
CONNECTIVES = {"because": "weil", "while": "während", "although": "obwohl", "when": "wenn"}

_ARTICLE = {("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das", ("nom", "pl"): "die",
            ("acc", "m"): "den", ("acc", "f"): "die", ("acc", "n"): "das", ("acc", "pl"): "die"}
_INDEF = {("nom", "m"): "ein", ("nom", "f"): "eine", ("nom", "n"): "ein",
          ("acc", "m"): "einen", ("acc", "f"): "eine", ("acc", "n"): "ein"}


def _inflect(adjective, ending):
    stem = ADJECTIVES[adjective]
    return (stem[:-1] if stem.endswith("e") else stem) + ending


def _noun_phrase(rng, case, animate):
    noun = rng.choice(ANIMATE if animate else list(NOUNS))
    german, gender, plural = NOUNS[noun]
    is_plural = rng.random() < 0.3
    definite = is_plural or rng.random() < 0.6
    adjectives = rng.sample(list(ADJECTIVES), k=rng.choice((0, 0, 1, 1, 2)))
    key = (case, "pl" if is_plural else gender)
    if definite:
        en = ["the"] + adjectives + [noun + ("s" if is_plural and not noun.endswith("s") else "")]
        # weak declension after a definite article: -e in the nominative singular and
        # feminine/neuter accusative, -en elsewhere
        ending = "e" if not is_plural and (case == "nom" or gender != "m") else "en"
        de = [_ARTICLE[key]] + [_inflect(a, ending) for a in adjectives] + [plural if is_plural else german]
    else:
        en = ["a" if not adjectives or adjectives[0][0] not in "aeiou" else "an"] + adjectives + [noun]
        # mixed declension after ein: the adjective carries the gender
        strong = {("nom", "m"): "er", ("nom", "n"): "es", ("acc", "n"): "es"}.get(key, "en" if key == ("acc", "m") else "e")
        de = [_INDEF[key]] + [_inflect(a, strong) for a in adjectives] + [german]
    return en, de, is_plural


def _clause(rng):
    """(english words, german main-clause words, german verb-final words, subject length,
    whether the German main clause ends in a participle)."""
    subject_en, subject_de, plural = _noun_phrase(rng, "nom", animate=True)
    object_en, object_de, _ = _noun_phrase(rng, "acc", animate=False)
    (en_3sg, en_pl, en_part), (de_3sg, de_pl, de_part) = VERBS[rng.choice(list(VERBS))]
    if rng.random() < 0.35:  # perfect tense: the participle closes the German clause
        aux_en, aux_de = ("have", "haben") if plural else ("has", "hat")
        en = subject_en + [aux_en, en_part] + object_en
        main = subject_de + [aux_de] + object_de + [de_part]
        final = subject_de + object_de + [de_part, aux_de]
        perfect = True
    else:
        verb_en, verb_de = (en_pl, de_pl) if plural else (en_3sg, de_3sg)
        en = subject_en + [verb_en] + object_en
        main = subject_de + [verb_de] + object_de
        final = subject_de + object_de + [verb_de]
        perfect = False
    return en, main, final, len(subject_de), perfect


def sentence_pair(rng):
    en, main, _, subject_len, perfect = _clause(rng)
    if rng.random() < 0.4:  # fronted adverb: the German verb moves before the subject
        adverb = rng.choice(list(ADVERBS))
        en = [adverb] + en
        main = [ADVERBS[adverb], main[subject_len]] + main[:subject_len] + main[subject_len + 1:]
    if rng.random() < 0.3:
        place = rng.choice(list(PLACES))
        en = en + place.split()
        # the place goes inside the German verb bracket, before a participle
        cut = len(main) - 1 if perfect else len(main)
        main = main[:cut] + PLACES[place].split() + main[cut:]
    if rng.random() < 0.35:  # subordinate clause: German verb-final
        connective = rng.choice(list(CONNECTIVES))
        sub_en, _, sub_final, _, _ = _clause(rng)
        en = en + [",", connective] + sub_en
        main = main + [",", CONNECTIVES[connective]] + sub_final
    return detokenize(en), detokenize(main)


def detokenize(words) -> str:
    """Words to a sentence: punctuation attaches to the word before it, a full stop ends it."""
    return " ".join(words).replace(" ,", ",") + "."


def make_corpus(n: int, seed: int = 0) -> list:
    """``n`` (english, german) pairs, deterministic for a seed."""
    rng = random.Random(seed)
    return [sentence_pair(rng) for _ in range(n)]


def write_corpus(prefix: str, n: int, seed: int = 0) -> None:
    """Write ``prefix.en`` and ``prefix.de``, one sentence per line."""
    pairs = make_corpus(n, seed)
    with open(prefix + ".en", "w", encoding="utf-8") as en, open(prefix + ".de", "w", encoding="utf-8") as de:
        for source, target in pairs:
            en.write(source + "\n")
            de.write(target + "\n")
