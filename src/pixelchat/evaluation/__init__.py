"""Measuring quality: the attribute judge, adherence and fidelity metrics, and `evaluate`.

An instrument only: nothing that generates, edits or re-ranks pictures may import this package.
"""

from pixelchat.evaluation.evaluate import Evaluation, EvaluationError, evaluate, write_report
from pixelchat.evaluation.judge import Judge, JudgeConfig, Prediction, load_judge, predict, train_judge
from pixelchat.evaluation.prompts import EvalPrompt, PromptFileError, read_prompts, scenes_suite

__all__ = ["EvalPrompt", "Evaluation", "EvaluationError", "Judge", "JudgeConfig", "Prediction", "PromptFileError",
           "evaluate", "load_judge", "predict", "read_prompts", "scenes_suite", "train_judge", "write_report"]
