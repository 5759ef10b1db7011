"""The experimental syllable world (CIRCUIT_ATLAS_TOYWORLD_CITIES=syllable): names built so that an
unordered bag of a city's tokens never tells its region, and each syllable is one token."""

import os
import subprocess
import sys
from collections import defaultdict

from circuit_atlas.toyworld import world as W


def test_every_bag_is_shared_by_cities_of_different_regions_of_one_kind():
    regions = W.syllable_regions(W.REAL_REGIONS)
    homes = defaultdict(list)  # bag -> [(city, region)]
    for r in regions:
        assert len(r.cities) >= 6, r.name
        for c in r.cities:
            parts = c.split()
            assert 2 <= len(parts) <= 4 and len(set(parts)) == len(parts), c
            assert set(parts) <= set(W.SYLLABLES), c
            homes[frozenset(parts)].append((c, r))
    names = [c for r in regions for c in r.cities]
    assert len(set(names)) == len(names)
    for bag, members in homes.items():
        assert len(members) >= 2, bag  # the bag alone never identifies the city
        assert len({r.name for _, r in members}) == len(members), members  # ... nor its region
        assert len({r.kind for _, r in members}) == 1, members  # ... even with the kind word of the prompt
    for city, (region, _, partner) in W.SYLLABLE_SHOWCASE.items():
        home = next(r for r in regions if r.name == region)
        assert home.cities[0] == city  # the donor / reference city of its region (experiments.reference_city)
        assert any(partner in r.cities and r.name != region for r in regions)
    assert regions == W.syllable_regions(W.REAL_REGIONS)  # deterministic


def test_syllables_are_single_tokens_in_the_syllable_world():
    # A fresh interpreter: the scheme is read once, when the world module is imported.
    code = (
        "from circuit_atlas.toyworld import corpus as C, tokenizer as T, world as W\n"
        "W.check_world()\n"
        "docs = C.generate_corpus(0, 3000, C.CorpusConfig(city_gap=0.5))\n"
        "tok = T.train_tokenizer(C.tokenizer_text(docs))\n"
        "bad = [s for s in W.SYLLABLES if T.n_tokens(tok, s) != 1 or T.n_tokens(tok, s, leading_space=False) != 1]\n"
        "assert not bad, bad\n"
        "for c, _ in W.all_cities():\n"
        "    assert T.n_tokens(tok, c) == len(c.split()), c\n"
        "assert sum(any(g in d for g in C.CITY_GAPS) for d in docs) > 100\n"
        "print('ok', len(W.all_cities()))\n"
    )
    env = {**os.environ, "CIRCUIT_ATLAS_TOYWORLD_CITIES": "syllable"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_unknown_scheme_is_one_clear_error():
    env = {**os.environ, "CIRCUIT_ATLAS_TOYWORLD_CITIES": "fake"}
    out = subprocess.run([sys.executable, "-c", "import circuit_atlas.toyworld.world"], env=env, capture_output=True,
                         text=True, cwd=os.getcwd())  # fmt: skip
    assert out.returncode != 0 and "must be 'real' or 'syllable'" in out.stderr
