"""Write the standard evaluation suite, benchmarks/prompts/scenes-eval.jsonl (deterministic).

    python benchmarks/make_eval_suite.py
    python benchmarks/make_eval_suite.py --split train --out runs/suite-train.jsonl   # diagnostic twin

324 prompts: 54 naming each number 1 … 6 of attributes, phrased only with the phrasings held
out from training (docs/scenes.md lists them); every attribute value is named. With
``--split train`` the same attributes are phrased with training phrasings instead, which tells
apart "cannot draw it" from "does not understand the unseen wording".
"""

import argparse
from pathlib import Path

from pixelchat.evaluation.prompts import scenes_suite, write_prompts

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="eval", choices=("eval", "train"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "prompts" / "scenes-eval.jsonl"))
    args = parser.parse_args()
    print(write_prompts(scenes_suite(split=args.split), args.out))
