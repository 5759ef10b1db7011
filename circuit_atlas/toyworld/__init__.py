"""The toy world: a small Llama trained on a synthetic corpus where the papers' showcase circuits exist.

Two-hop recall ("The capital of the state containing Dallas is" -> " Austin") and multilingual
opposites ("The opposite of small is" -> " big", "Le contraire de petit est" -> " grand",
"小的反义词是" -> "大").

Modules:
    world      regions, cities, capitals, codes, kinds; opposite / synonym word lists (plain data)
    corpus     seeded corpus generator, held-out split, evaluation prompt sets
    tokenizer  byte-level BPE: cities multi-token, capitals / regions / codes single tokens
    model      ModelConfig and the training loop of the LlamaForCausalLM
    evaluate   greedy whole-answer accuracy per evaluation set, metrics.json
    build      build_toyworld_model(out_dir): corpus -> tokenizer -> model -> metrics

Design (measured on 2 CPU cores; see metrics.json of the shipped model):
- Sub-word tokenizer trained without the city names, so every city spans 2-10 tokens
  ("Dallas" = " D" "all" "as") and no embedding can hold "Dallas -> Texas"; capitals, region
  names and region codes are single tokens, so a two-hop answer is one token.
- Untied embeddings, 4 layers, d_model 128, 4 heads, MLP 512 (~1.5 M parameters).
- Held-out cities (one per region, Dallas / Oakland / Shanghai / Vancouver among them) never
  appear in a two-hop sentence nor together with their capital; their two-hop answers must be
  composed from "Dallas is in Texas" and "The capital of Texas is Austin".
- With multi-token cities the model first memorises each trained city's capital (held-out
  two-hop plateaus at 70-77 % with weight decay 0.05, also with a one-hop-first curriculum);
  strong decoupled weight decay (AdamW, 1.0; 0.6 works too) makes the memorised shortcut decay
  in favour of the shared city -> region -> capital path: 97-99 % held-out after 2,000-2,500 steps
  on seeds 0, 1, 2, with every one-hop fact, trained two-hop fact and opposite at 100 %.
- "Address: Dallas TX." sentences put the region on the city's last token (the model must know
  the region there), so "Dallas -> Texas" is computed over the city span by the early layers.
- Translations ("petit is French for small.") and code-switched opposites that answer in the
  sentence's language ("The opposite of petit is big.", "Le contraire de small est grand.") give
  a language-independent meaning, and an output language apart from the word, a reason to exist.
  (Answering in the word's language instead, a first version, left no language features: the
  model looked "petit -> grand" up directly.) English is half of the multilingual text.
"""

from .build import build_toyworld_model

__all__ = ["build_toyworld_model"]
