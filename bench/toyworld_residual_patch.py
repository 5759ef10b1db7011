"""Where the two-hop state lives in the real toy-world model: the residual stream patched from a donor.

    python bench/toyworld_residual_patch.py [MODEL_DIR] [--cities 40] [--seed 3]

No transcoders. For each sampled city whose two-hop answer is right, a donor city of another region of the
same kind with as many tokens is run, and the residual stream after layer k (k = 0 .. L-1) is copied from
the donor onto one site of the prompt: the whole city span, the city's last token, or the final position.
"-> donor" counts prompts whose answer becomes the donor's capital. A region variable computed on the city
shows as "last city token" swapping at some layer; a final position that already knows the city after
layer 0 ("final", k = 0) means layer-0 attention gave it enough to look the city up there (the shortcut
the syllable world removes; docs/toyworld-v3-notes.md).
"""

from __future__ import annotations

import argparse
import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from toyworld_mlp_ablation import encode_two_hop  # noqa: E402  (bench/ is on sys.path when run as a script)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="circuit_atlas/zoo/toyworld/model")
    ap.add_argument("--cities", type=int, default=40)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from circuit_atlas.toyworld import world

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = LlamaForCausalLM.from_pretrained(a.model).eval()
    n_layers = len(model.model.layers)
    recorded: dict[int, torch.Tensor] = {}  # layer -> the donor's residual after it [T, d]
    patch: dict = {}  # {"layer": k, "positions": [...], "values": [len(positions), d]} or empty
    recording = [False]

    def hook(layer: int, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if recording[0]:
            recorded[layer] = hidden[0].detach().clone()
        if patch and patch["layer"] == layer:
            hidden = hidden.clone()
            hidden[0, patch["positions"]] = patch["values"]
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    for i, block in enumerate(model.model.layers):
        block.register_forward_hook(lambda mod, inp, out, i=i: hook(i, out))

    def encode(city, region):
        return encode_two_hop(tok, city, region)

    def top1(ids) -> int:
        with torch.no_grad():
            return int(model(ids).logits[0, -1].argmax())

    def capital(region) -> int:
        return tok.encode(" " + region.capital, add_special_tokens=False)[0]

    rng = random.Random(a.seed)
    counts: dict[str, list[int]] = {}  # "res k site" -> [to donor, n]
    for city, region in rng.sample(world.all_cities(), a.cities):
        ids, span = encode(city, region)
        if top1(ids) != capital(region):
            continue
        donors = [(c, r) for c, r in world.all_cities() if r.kind == region.kind and r is not region
                  and len(encode(c, r)[1]) == len(span)]  # fmt: skip
        if not donors:
            continue
        d_city, d_region = rng.choice(donors)
        d_ids, d_span = encode(d_city, d_region)
        recording[0] = True
        top1(d_ids)
        recording[0] = False
        sites = {"city span": (span, d_span), "last city token": ([span[-1]], [d_span[-1]]),
                 "final position": ([ids.shape[1] - 1], [d_ids.shape[1] - 1])}  # fmt: skip
        for k in range(n_layers):
            for name, (where, src) in sites.items():
                patch.update(layer=k, positions=where, values=recorded[k][src])
                got = top1(ids)
                patch.clear()
                row = counts.setdefault(f"res{k} {name}", [0, 0])
                row[0] += got == capital(d_region)
                row[1] += 1
    print(f"{a.model}: answer becomes the donor's capital when the residual after layer k is patched")
    for name, (to, n) in counts.items():
        print(f"  {name:<24} -> donor {to:>3}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
