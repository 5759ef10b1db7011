"""Seeded generator of the toy world's training corpus and evaluation prompts.

One document is one short sentence (or a two-sentence chain). Categories and their templates:

- city facts (one hop): "Dallas is in Texas.", "The state containing Dallas is Texas.", ...
- capital facts (one hop): "The capital of Texas is Austin.", "Austin is the capital of Texas.", ...
- code facts: "The code of Texas is TX." (a second attribute of each region)
- city codes: "Address: Dallas TX." -- the region code right after the city, so the model must know
  the region at the city's last token (all cities, held-out ones included; one hop)
- two-hop capital: "The capital of the state containing Dallas is Austin." -- never for held-out cities
- chains: "Dallas is in Texas. The capital of Texas is Austin." -- never for held-out cities
- two-hop code (optional, off by default; it would put held-out cities into two-hop sentences):
  "The code of the state containing Dallas is TX."
- opposites / synonyms in English, French, Chinese: "The opposite of small is big.",
  "Le contraire de petit est grand.", "小的反义词是大。"
- translations and code-switched opposites: "petit is French for small.",
  "The opposite of petit is big.", "Le contraire de small est grand." -- the answer is in the
  language of the sentence, not of the word, so the model needs the word's meaning apart from its
  language, and the output language apart from the word (the papers' multilingual picture)
- filler: "The cat found a letter today.", "Le chat dort.", "猫在睡觉。"

Held-out cities: one per region (the showcase cities Dallas, Oakland, Shanghai, Vancouver are always
held out for their regions; the others are drawn with the seed). A held-out city keeps its one-hop
facts, but it never appears in a training sentence together with its capital.

Evaluation prompts are (prompt, answer) pairs; the answer starts with a space except in Chinese.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import dataclass, field

from . import world as W

CITY_TEMPLATES = (
    "{city} is in {region}.",
    "{city} is a city in {region}.",
    "The city of {city} is in {region}.",
    "The {kind} containing {city} is {region}.",
    "{city} is located in the {kind} of {region}.",
    "{city} belongs to {region}.",
)
CAPITAL_TEMPLATES = (
    "The capital of {region} is {capital}.",
    "{capital} is the capital of {region}.",
    "The capital city of {region} is {capital}.",
    "The {kind} of {region} has its capital in {capital}.",
)
CODE_TEMPLATES = (
    "The code of {region} is {code}.",
    "{region} has the code {code}.",
)
# The region code right after the city: the model must know the region *at the city's last token*.
CITY_CODE_TEMPLATES = (
    "Address: {city} {code}.",
    "Welcome to {city} {code}!",
    "The train to {city} {code} is late.",
)
TWO_HOP_TEMPLATES = (
    "The capital of the {kind} containing {city} is {capital}.",
    "The capital city of the {kind} containing {city} is {capital}.",
    "The {kind} containing {city} has its capital in {capital}.",
)
# Put between a city and the rest of its sentence (CorpusConfig.city_gap), so that the city's distance from
# the position that answers varies and layer-0 attention cannot pick the city's syllables by offset.
CITY_GAPS = (",", ", as we know,", ", they say,", ", of course,", ", I think,", " today", ", we hear,")
TWO_HOP_CODE_TEMPLATES = ("The code of the {kind} containing {city} is {code}.",)
CHAIN_TEMPLATES = (
    "{city} is in {region}. The capital of {region} is {capital}.",
    "The {kind} containing {city} is {region}. The capital of {region} is {capital}.",
)
OPPOSITE_TEMPLATES = {
    "en": "The opposite of {a} is {b}.",
    "fr": "Le contraire de {a} est {b}.",
    "zh": "{a}的反义词是{b}。",
}
SYNONYM_TEMPLATES = {
    "en": "A synonym of {a} is {b}.",
    "fr": "Un synonyme de {a} est {b}.",
    "zh": "{a}的同义词是{b}。",
}
TRANSLATION_TEMPLATES = (
    "{w} is {lang} for {en}.",
    "The {lang} word for {en} is {w}.",
    "In {lang}, {en} is {w}.",
)

# Eval prompt templates (the first template of each family, cut before the answer).
EVAL_CITY = "{city} is in"
EVAL_CAPITAL = "The capital of {region} is"
EVAL_TWO_HOP = "The capital of the {kind} containing {city} is"
EVAL_OPPOSITE = {"en": "The opposite of {a} is", "fr": "Le contraire de {a} est", "zh": "{a}的反义词是"}


@dataclass
class CorpusConfig:
    """What the corpus contains and in which proportions (weights need not sum to 1)."""

    seed: int = 0
    """Seed for the held-out split and the sentence sampler."""
    n_sentences: int = 200_000
    """Number of documents (lines) to generate."""
    w_city: float = 0.30
    """Weight of one-hop city -> region facts."""
    w_capital: float = 0.10
    """Weight of one-hop region -> capital facts."""
    w_code: float = 0.03
    """Weight of region -> code facts."""
    w_city_code: float = 0.05
    """Weight of "Address: Dallas TX." sentences (region code right after the city; all cities)."""
    w_two_hop: float = 0.27
    """Weight of two-hop capital sentences (trained cities only)."""
    w_two_hop_code: float = 0.0
    """Weight of two-hop code sentences ("The code of the state containing Dallas is TX."); these
    cover every city, held-out ones included, when `two_hop_code_heldout` is true."""
    two_hop_code_heldout: bool = True
    """Whether two-hop code sentences also use held-out cities."""
    w_chain: float = 0.05
    """Weight of in-context chains "Dallas is in Texas. The capital of Texas is Austin."."""
    w_opposite: float = 0.12
    """Weight of opposites (English, French, Chinese; both directions)."""
    w_synonym: float = 0.03
    """Weight of synonyms."""
    w_translation: float = 0.04
    """Weight of translations ("petit is French for small.")."""
    w_codeswitch: float = 0.03
    """Weight of code-switched opposites ("The opposite of petit is big.": answer in the frame's language)."""
    language_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    """How often English, French and Chinese are picked for opposites, synonyms and code-switched
    frames: English is the most common language, as in real text."""
    w_filler: float = 0.03
    """Weight of filler sentences."""
    city_gap: float = 0.0
    """Share of city facts, two-hop sentences and chains with a phrase between the city and the rest of
    the sentence ("Dallas, as we know, is in Texas."); 0 = never. Evaluation prompts have none."""
    extra: dict = field(default_factory=dict)
    """Free-form notes recorded with the corpus (not used by the generator)."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def heldout_cities(seed: int = 0) -> list[str]:
    """One city per region whose two-hop sentence never appears in training (showcase cities fixed)."""
    rng = random.Random(f"heldout-{seed}")
    out = []
    for r in W.REGIONS:
        fixed = [c for c in r.cities if c in W.SHOWCASE]
        out.append(fixed[0] if fixed else rng.choice(r.cities))
    return out


def _kind_word(region: W.Region, rng: random.Random) -> str:
    return rng.choice(W.KIND_WORDS[region.kind])


class _Sampler:
    def __init__(self, cfg: CorpusConfig, stream: str = ""):
        self.cfg = cfg
        self.rng = random.Random(f"corpus-{cfg.seed}{stream}")
        held = set(heldout_cities(cfg.seed))
        self.cities = W.all_cities()
        self.trained = [(c, r) for c, r in self.cities if c not in held]
        self.code_cities = self.cities if cfg.two_hop_code_heldout else self.trained
        cats = [
            ("city", cfg.w_city),
            ("capital", cfg.w_capital),
            ("code", cfg.w_code),
            ("city_code", cfg.w_city_code),
            ("two_hop", cfg.w_two_hop),
            ("two_hop_code", cfg.w_two_hop_code),
            ("chain", cfg.w_chain),
            ("opposite", cfg.w_opposite),
            ("synonym", cfg.w_synonym),
            ("translation", cfg.w_translation),
            ("codeswitch", cfg.w_codeswitch),
            ("filler", cfg.w_filler),
        ]
        self.cats = [c for c, w in cats if w > 0]
        self.weights = [w for _, w in cats if w > 0]

    def sentence(self) -> str:
        rng = self.rng
        cat = rng.choices(self.cats, self.weights)[0]
        return getattr(self, "_" + cat)(rng)

    def _gap(self, city: str, rng) -> str:
        return city + rng.choice(CITY_GAPS) if self.cfg.city_gap and rng.random() < self.cfg.city_gap else city

    def _city(self, rng):
        c, r = rng.choice(self.cities)
        c = self._gap(c, rng)
        return rng.choice(CITY_TEMPLATES).format(city=c, region=r.name, kind=_kind_word(r, rng))

    def _capital(self, rng):
        r = rng.choice(W.REGIONS)
        return rng.choice(CAPITAL_TEMPLATES).format(region=r.name, capital=r.capital, kind=_kind_word(r, rng))

    def _code(self, rng):
        r = rng.choice(W.REGIONS)
        return rng.choice(CODE_TEMPLATES).format(region=r.name, code=r.code)

    def _city_code(self, rng):
        c, r = rng.choice(self.cities)
        return rng.choice(CITY_CODE_TEMPLATES).format(city=c, code=r.code)

    def _two_hop(self, rng):
        c, r = rng.choice(self.trained)
        c = self._gap(c, rng)
        return rng.choice(TWO_HOP_TEMPLATES).format(city=c, capital=r.capital, kind=_kind_word(r, rng))

    def _two_hop_code(self, rng):
        c, r = rng.choice(self.code_cities)
        c = self._gap(c, rng)
        return rng.choice(TWO_HOP_CODE_TEMPLATES).format(city=c, code=r.code, kind=_kind_word(r, rng))

    def _chain(self, rng):
        c, r = rng.choice(self.trained)
        c = self._gap(c, rng)
        return rng.choice(CHAIN_TEMPLATES).format(city=c, region=r.name, capital=r.capital, kind=_kind_word(r, rng))

    def _language(self, rng, exclude: str | None = None) -> str:
        langs = [(lang, w) for lang, w in zip(("en", "fr", "zh"), self.cfg.language_weights) if lang != exclude]
        return rng.choices([lang for lang, _ in langs], weights=[w for _, w in langs])[0]

    def _opposite(self, rng):
        lang = self._language(rng)
        a, b = _pair(rng, lang)
        return OPPOSITE_TEMPLATES[lang].format(a=a, b=b)

    def _synonym(self, rng):
        lang = self._language(rng)
        a, b = rng.choice(W.SYNONYMS[lang])
        if rng.random() < 0.5:
            a, b = b, a
        return SYNONYM_TEMPLATES[lang].format(a=a, b=b)

    def _translation(self, rng):
        lang = rng.choice(("fr", "zh"))
        i = rng.randrange(len(W.OPPOSITES))
        j = rng.randrange(2)
        en = W.OPPOSITES[i][0][j]
        w = W.OPPOSITES[i][1 if lang == "fr" else 2][j]
        return rng.choice(TRANSLATION_TEMPLATES).format(w=w, en=en, lang=W.LANGUAGE_NAMES[lang])

    def _codeswitch(self, rng):
        # A word of one language in another language's sentence; the answer follows the sentence.
        frame = self._language(rng)
        words = self._language(rng, exclude=frame)
        frame_words = {w for concept in W.OPPOSITES for w in concept[_LANG_INDEX[frame]]}
        while True:  # skip words that also exist in the frame's language ("long")
            concept, j = rng.choice(W.OPPOSITES), rng.randrange(2)
            a, b = concept[_LANG_INDEX[words]][j], concept[_LANG_INDEX[frame]][1 - j]
            if a not in frame_words:
                return OPPOSITE_TEMPLATES[frame].format(a=a, b=b)

    def _filler(self, rng):
        u = rng.random()
        if u < 0.7:
            f = W.FILLER
            return f"{rng.choice(f['subjects'])} {rng.choice(f['verbs'])} {rng.choice(f['objects'])}{rng.choice(f['tails'])}."
        return rng.choice(W.FILLER["fr"] if u < 0.85 else W.FILLER["zh"])


_LANG_INDEX = {"en": 0, "fr": 1, "zh": 2}


def _pair(rng: random.Random, lang: str) -> tuple[str, str]:
    a, b = rng.choice(W.OPPOSITES)[_LANG_INDEX[lang]]
    return (b, a) if rng.random() < 0.5 else (a, b)


def generate_corpus(
    seed: int = 0, n_sentences: int = 200_000, config: CorpusConfig | None = None, stream: str = ""
) -> list[str]:
    """`n_sentences` documents, deterministic in (seed, config, stream)."""
    cfg = dataclasses.replace(config or CorpusConfig(), seed=seed, n_sentences=n_sentences)
    W.check_world()
    s = _Sampler(cfg, stream)
    return [s.sentence() for _ in range(cfg.n_sentences)]


def first_phase_corpus(seed: int = 0, n_sentences: int = 100_000, config: CorpusConfig | None = None) -> list[str]:
    """The curriculum's first phase: the same mix without two-hop sentences and chains."""
    cfg = dataclasses.replace(config or CorpusConfig(), w_two_hop=0.0, w_two_hop_code=0.0, w_chain=0.0)
    return generate_corpus(seed, n_sentences, cfg, stream="-first-phase")


def write_corpus(path, seed: int = 0, n_sentences: int = 200_000, config: CorpusConfig | None = None) -> list[str]:
    """Write the corpus to `path`, one document per line; returns the documents."""
    docs = generate_corpus(seed, n_sentences, config)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(d + "\n" for d in docs)
    return docs


def tokenizer_text(docs: list[str]) -> list[str]:
    """The documents with every city name removed: what the BPE tokenizer is trained on, so that
    city names are spelled with sub-word pieces while capitals and region names become tokens."""
    names = sorted((c for c, _ in W.all_cities()), key=len, reverse=True)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
    return [pattern.sub("", d) for d in docs] + lexicon()


def lexicon() -> list[str]:
    """Every region name, capital, code and multilingual word once, so that the tokenizer covers them
    whatever the corpus size."""
    lines = [f" {r.name} {r.capital} {r.code}." for r in W.REGIONS]  # leading space: " Texas"
    if W.CITY_SCHEME == "syllable":  # every syllable one token, with its leading space: " Dal"
        lines.append(" " + " ".join(W.SYLLABLES))
        lines.extend(W.SYLLABLES)  # and at the start of a sentence: "Dal"
    for concept in W.OPPOSITES:
        for lang_i, (a, b) in enumerate(concept):
            lines.append(f" {a} {b}" if a.isascii() or lang_i == 1 else f"{a}{b}")
    for lang, pairs in W.SYNONYMS.items():
        for a, b in pairs:
            lines.append(f"{a}{b}" if lang == "zh" else f" {a} {b}")
    return lines


def eval_sets(seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Evaluation prompt sets: name -> [(prompt, answer)]."""
    held = set(heldout_cities(seed))
    cities = W.all_cities()
    sets: dict[str, list[tuple[str, str]]] = {
        "one_hop_city": [(EVAL_CITY.format(city=c), " " + r.name) for c, r in cities],
        "one_hop_capital": [(EVAL_CAPITAL.format(region=r.name), " " + r.capital) for r in W.REGIONS],
        "two_hop_heldout": [
            (EVAL_TWO_HOP.format(kind=r.kind_word, city=c), " " + r.capital) for c, r in cities if c in held
        ],
        "two_hop_trained": [
            (EVAL_TWO_HOP.format(kind=r.kind_word, city=c), " " + r.capital) for c, r in cities if c not in held
        ],
    }
    for li, lang in enumerate(("en", "fr", "zh")):
        sp = "" if lang == "zh" else " "
        items = []
        for concept in W.OPPOSITES:
            a, b = concept[li]
            items.append((EVAL_OPPOSITE[lang].format(a=a), sp + b))
            items.append((EVAL_OPPOSITE[lang].format(a=b), sp + a))
        sets[f"opposites_{lang}"] = items
    # code-switched: English or French frame, words of the other languages, answer in the frame's language
    items = []
    for frame, fi in (("en", 0), ("fr", 1)):
        frame_words = {w for concept in W.OPPOSITES for w in concept[fi]}
        for concept in W.OPPOSITES:
            for li in {0, 1, 2} - {fi}:
                for j in range(2):
                    a, b = concept[li][j], concept[fi][1 - j]
                    if a not in frame_words:
                        items.append((EVAL_OPPOSITE[frame].format(a=a), " " + b))
    sets["opposites_codeswitch"] = items
    return sets


def corpus_config_json(cfg: CorpusConfig) -> str:
    d = cfg.to_json()
    d["heldout_cities"] = heldout_cities(cfg.seed)
    d["city_scheme"] = W.CITY_SCHEME  # the world the model was trained on (CIRCUIT_ATLAS_TOYWORLD_CITIES)
    d["n_regions"] = len(W.REGIONS)
    d["n_cities"] = len(W.all_cities())
    return json.dumps(d, indent=2, ensure_ascii=False)
