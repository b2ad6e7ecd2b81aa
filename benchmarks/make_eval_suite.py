"""Write the standard evaluation suite, benchmarks/prompts/scenes-eval.jsonl (deterministic).

    python benchmarks/make_eval_suite.py

324 prompts: 54 naming each number 1 … 6 of attributes, phrased only with the phrasings held
out from training (docs/scenes.md lists them); every attribute value is named.
"""

from pathlib import Path

from pixelchat.evaluation.prompts import scenes_suite, write_prompts

if __name__ == "__main__":
    path = write_prompts(scenes_suite(), Path(__file__).resolve().parent / "prompts" / "scenes-eval.jsonl")
    print(path)
