"""Where the real toy-world model computes the two-hop answer: each MLP's output zeroed at one site.

    python bench/toyworld_mlp_ablation.py [MODEL_DIR] [--cities 30] [--patch]

No transcoders: forward hooks on the Hugging Face model set one layer's MLP output to zero on the
city's tokens or at the final position, and count how often the greedy answer stops being the capital.
Layered city -> region -> capital steps show up as a middle MLP that matters. What the toy world shows
instead is MLP0 mattering and the later MLPs being redundant (docs/toyworld-v3-notes.md).

Zeroing an MLP at the final position also removes what it does for the frame (" is" after "containing"),
so --patch adds the cleaner test: the MLP output at the site is *replaced* by its value on a donor prompt
(a city of another region of the same kind; on the city span, right-aligned, the donor has as many tokens).
An MLP that only processes the frame is the same on both prompts; one that looks the city up carries the
donor's answer: "-> donor" counts prompts whose answer becomes the donor's capital.
"""

from __future__ import annotations

import argparse
import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def encode_two_hop(tok, city, region):
    """(ids (1, T) with BOS, the positions of the city's tokens) of the two-hop prompt for `city`."""
    import torch

    from circuit_atlas.toyworld import experiments as ex

    prompt = ex.two_hop_prompt(city, region)
    enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    start = prompt.find(city)
    end = start + len(city)
    span = [j + 1 for j, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]  # +1: BOS
    return torch.tensor([[tok.bos_token_id] + enc["input_ids"]]), span


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="circuit_atlas/zoo/toyworld/model")
    ap.add_argument("--cities", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--patch", action="store_true", help="also patch each MLP output from a donor prompt")
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from circuit_atlas.toyworld import world

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = LlamaForCausalLM.from_pretrained(a.model).eval()
    zero: dict[int, list[int]] = {}  # layer -> positions whose MLP output is set to 0 (or to `donor`'s)
    donor: dict[int, torch.Tensor] = {}  # layer -> the donor's MLP output at those positions [len(positions), d]
    record: dict[int, torch.Tensor] = {}  # layer -> this run's MLP output [T, d], when recording

    def hook(layer: int, output: torch.Tensor):
        if recording:
            record[layer] = output[0].detach().clone()
        if layer in zero:
            output = output.clone()
            output[0, zero[layer]] = donor[layer] if layer in donor else 0
            return output

    recording = False

    for i, block in enumerate(model.model.layers):
        block.mlp.register_forward_hook(lambda mod, inp, out, i=i: hook(i, out))
    n_layers = len(model.model.layers)
    counts: dict[str, int] = {}
    rng = random.Random(a.seed)
    picks = rng.sample(world.all_cities(), a.cities)

    def encode(city, region):
        return encode_two_hop(tok, city, region)

    def capital_id(region) -> int:
        return tok.encode(" " + region.capital, add_special_tokens=False)[0]

    def top1(ids) -> int:
        with torch.no_grad():
            return int(model(ids).logits[0, -1].argmax())

    patched: dict[str, list[int]] = {}  # site -> [changed, became the donor's capital, n]
    for city, region in picks:
        ids, span = encode(city, region)
        last = ids.shape[1] - 1
        answer = capital_id(region)
        sites = {f"MLP{layer} on the city": (layer, span) for layer in range(n_layers)}
        sites.update({f"MLP{layer} at the last position": (layer, [last]) for layer in range(n_layers)})
        for name, (layer, where) in sites.items():
            zero.clear()
            donor.clear()
            zero[layer] = where
            counts[name] = counts.get(name, 0) + (top1(ids) != answer)
        if not a.patch:
            continue
        same_len = [(c, r) for c, r in world.all_cities() if r.kind == region.kind and r is not region
                    and len(encode(c, r)[1]) == len(span)]  # fmt: skip
        if not same_len:  # no donor of the same token length: this prompt is not patched
            continue
        d_city, d_region = rng.choice(same_len)
        d_ids, d_span = encode(d_city, d_region)
        zero.clear()
        donor.clear()
        recording = True
        top1(d_ids)
        recording = False
        for name, (layer, where) in sites.items():
            zero.clear()
            donor.clear()
            zero[layer] = where
            src = d_span if where == span else [d_ids.shape[1] - 1]
            donor[layer] = record[layer][src]
            got = top1(ids)
            row = patched.setdefault(name, [0, 0, 0])
            row[0] += got != answer
            row[1] += got == capital_id(d_region)
            row[2] += 1
    zero.clear()
    donor.clear()
    print(f"{a.model}: answer changes when one MLP output is zeroed ({len(picks)} two-hop prompts)")
    for name, k in counts.items():
        extra = ""
        if name in patched:
            ch, to, n = patched[name]
            extra = f"   patched from a donor: changes {ch:>3}/{n}, -> donor {to:>3}/{n}"
        print(f"  {name:<28} {k:>3}/{len(picks)}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
