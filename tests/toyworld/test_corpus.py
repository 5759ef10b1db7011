"""Toy-world corpus: determinism, held-out split, required names, size of the world."""

import re

from circuit_atlas.toyworld import corpus as C
from circuit_atlas.toyworld import world as W

N = 20_000


def test_deterministic_by_seed():
    a = C.generate_corpus(seed=0, n_sentences=2000)
    assert a == C.generate_corpus(seed=0, n_sentences=2000)
    assert a != C.generate_corpus(seed=1, n_sentences=2000)
    assert C.heldout_cities(0) == C.heldout_cities(0)


def test_world_is_consistent_and_large_enough():
    W.check_world()
    assert len(W.REGIONS) >= 44
    assert {r.kind for r in W.REGIONS} == {"state", "country", "province"}
    assert all(len(r.cities) >= 3 for r in W.REGIONS)


def test_required_real_names_present():
    facts = {(c, r.name, r.capital, r.kind) for c, r in W.all_cities()}
    assert ("Dallas", "Texas", "Austin", "state") in facts
    assert ("Oakland", "California", "Sacramento", "state") in facts
    assert ("Shanghai", "China", "Beijing", "country") in facts
    assert ("Vancouver", "British Columbia", "Victoria", "province") in facts
    docs = C.generate_corpus(seed=0, n_sentences=N)
    text = "\n".join(docs)
    for s in (
        "Dallas is in Texas.",
        "The capital of Texas is Austin.",
        "The opposite of small is big.",
        "Le contraire de petit est grand.",
        "小的反义词是大。",
        "petit is French for small.",
    ):
        assert s in text, s
    assert "The capital of the territory containing" in text  # Canadian regions' kind word
    assert "The capital of the country containing" in text


def test_heldout_cities_never_in_two_hop_training_sentences():
    held = C.heldout_cities(0)
    assert set(W.SHOWCASE) <= set(held)
    assert len(held) == len(W.REGIONS)  # one per region
    capital_of = {c: r.capital for c, r in W.all_cities()}
    docs = C.generate_corpus(seed=0, n_sentences=N)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in held) + r")\b")
    n_two_hop = 0
    for d in docs:
        if "containing" in d and "capital" in d:
            n_two_hop += 1
        m = pattern.search(d)
        if m is None:
            continue
        city = m.group(0)
        # never a two-hop sentence, and never together with its capital
        assert not ("containing" in d and "capital" in d), d
        assert not re.search(r"\b" + re.escape(capital_of[city]) + r"\b", d), d
    assert n_two_hop > N // 10


def test_eval_sets():
    sets = C.eval_sets(0)
    held = set(C.heldout_cities(0))
    assert len(sets["two_hop_heldout"]) == len(held)
    assert ("The capital of the state containing Dallas is", " Austin") in sets["two_hop_heldout"]
    assert ("The capital of the territory containing Vancouver is", " Victoria") in sets["two_hop_heldout"]
    assert ("The capital of the country containing Shanghai is", " Beijing") in sets["two_hop_heldout"]
    assert not any(p.endswith(f" {c} is") for p, _ in sets["two_hop_trained"] for c in held)
    assert ("Le contraire de petit est", " grand") in sets["opposites_fr"]
    assert ("小的反义词是", "大") in sets["opposites_zh"]
    assert ("The opposite of small is", " big") in sets["opposites_en"]


def test_write_corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    docs = C.write_corpus(p, seed=0, n_sentences=100)
    assert p.read_text(encoding="utf-8").splitlines() == docs
