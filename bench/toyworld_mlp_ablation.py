"""Where the real toy-world model computes the two-hop answer: each MLP's output zeroed at one site.

    python bench/toyworld_mlp_ablation.py [MODEL_DIR] [--cities 30]

No transcoders: forward hooks on the Hugging Face model set one layer's MLP output to zero on the
city's tokens or at the final position, and count how often the greedy answer stops being the capital.
Layered city -> region -> capital steps show up as a middle MLP that matters. What the toy world shows
instead is MLP0 mattering and the later MLPs being redundant (docs/toyworld-v3-notes.md).
"""

from __future__ import annotations

import argparse
import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="circuit_atlas/zoo/toyworld/model")
    ap.add_argument("--cities", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from circuit_atlas.toyworld import experiments as ex
    from circuit_atlas.toyworld import world

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = LlamaForCausalLM.from_pretrained(a.model).eval()
    zero: dict[int, list[int]] = {}  # layer -> positions whose MLP output is set to 0

    def hook(layer: int, output: torch.Tensor):
        if layer in zero:
            output = output.clone()
            output[0, zero[layer]] = 0
            return output

    for i, block in enumerate(model.model.layers):
        block.mlp.register_forward_hook(lambda mod, inp, out, i=i: hook(i, out))
    n_layers = len(model.model.layers)
    counts: dict[str, int] = {}
    picks = random.Random(a.seed).sample(world.all_cities(), a.cities)
    for city, region in picks:
        prompt = ex.two_hop_prompt(city, region)
        enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        start = prompt.find(city)
        end = start + len(city)
        span = [j + 1 for j, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]  # +1: BOS
        ids = torch.tensor([[tok.bos_token_id] + enc["input_ids"]])
        last = ids.shape[1] - 1
        answer = tok.encode(" " + region.capital, add_special_tokens=False)[0]
        sites = {f"MLP{layer} on the city": {layer: span} for layer in range(n_layers)}
        sites.update({f"MLP{layer} at the last position": {layer: [last]} for layer in range(n_layers)})
        for name, where in sites.items():
            zero.clear()
            zero.update(where)
            with torch.no_grad():
                changed = int(model(ids).logits[0, -1].argmax()) != answer
            counts[name] = counts.get(name, 0) + changed
    zero.clear()
    print(f"{a.model}: answer changes when one MLP output is zeroed ({len(picks)} two-hop prompts)")
    for name, k in counts.items():
        print(f"  {name:<28} {k:>3}/{len(picks)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
