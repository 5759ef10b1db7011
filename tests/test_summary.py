"""The one-screen summary: readable tokens, what the targets cover, what influence means."""

from functools import cache

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.display import display_token, show_text
from circuit_atlas.summary import summarize


@cache
def toy() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


def test_byte_tokens_print_as_bytes():
    tok = toy().tokenizer
    half = tok.convert_tokens_to_ids("¡")  # byte-level BPE writes byte 0xA1 as '¡': half of a character
    assert tok.decode([half]) == "\ufffd"  # what was printed before
    assert display_token(tok, half) == "<0xA1>"
    for i in range(len(tok)):
        assert "\ufffd" not in display_token(tok, i)
    control = next(i for i in range(len(tok)) if tok.decode([i]) == "\x12")
    assert display_token(tok, control) == "<0x12>"  # was '\x12'
    assert display_token(tok, tok.convert_tokens_to_ids("ĠAustin")) == "' Austin'"
    assert show_text("\x00a") == "<0x00 0x61>" and show_text("a\nb") == repr("a\nb")


def test_summary_says_what_the_targets_cover_and_what_influence_is():
    model = toy()
    graph = attribute(model, "The capital of the state containing Dallas is", max_n_logits=3, desired_logit_prob=0.5,
                      progress=False)  # fmt: skip
    text = summarize(graph, graph.prune(), top_nodes=3, model=model)
    covered = sum(float(p) for p in graph.logit_probabilities)
    assert f"which cover {covered:.1%} of the next-token probability" in text
    assert "influence = how much of the targets' probability-weighted input flows through the node" in text
    assert "replacement" in text and "rather than error nodes" in text
