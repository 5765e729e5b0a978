"""What the RL method optimises on a style-transfer task: the training reward, the dev score and the test
report (``style_eval.json``, ``rewrites.tsv``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rlprompt.files import atomic_write_bytes
from rlprompt.perplexity import sentence_perplexities
from rlprompt.style.data import StyleTask
from rlprompt.style.encoder import SentenceEncoder
from rlprompt.style.reward import StyleReward
from rlprompt.style.rewriter import REWRITE_TEMPLATE, Rewriter, evaluation_rewrites
from rlprompt.tables import markdown_table, number


class StyleObjective:
    """Everything the RL method needs to learn a rewriting prompt on a :class:`StyleTask`.

    * Training reward (RLPrompt's): for each prompt and input, ``samples`` rewrites are sampled and the best
      joint score (mean of content and target-style probability, 0-100) counts; the scores are z-scored per
      input across the batch's prompts and averaged over the inputs.
    * Dev (choosing the prompt): the mean joint score on the task's dev inputs, with the evaluation decoding
      (``eval_samples`` 1: greedy; N: best of N by the reward).
    * Nothing is generated twice: best scores are cached per (prompt, input, decoding).
    """

    metric = "joint"

    def __init__(self, lm, task: StyleTask, samples: int = 4, eval_samples: int = 1, top_k: int = 10,
                 max_new_tokens: int = 24, seed: int = 0, test_inputs: int | None = None):  # fmt: skip
        from rlprompt.scoring import ScorerStats

        self.lm, self.task, self.samples, self.eval_samples, self.seed = lm, task, samples, eval_samples, seed
        self.policy_lm = lm  # the policy writes the task LM's own tokens here (one tokenizer)
        self.test_inputs = test_inputs
        self.rewriter = Rewriter(lm, max_new_tokens=max_new_tokens, top_k=top_k)
        self.encoder = SentenceEncoder()
        self.classifier = task.classifier(self.encoder)
        self.reward = StyleReward(self.encoder, self.classifier, task.target)
        self.stats = ScorerStats()  # pairs_scored: (prompt, input) pairs generated; tokens: new tokens
        self._best: dict[tuple, float] = {}
        self._calls = 0  # generation calls so far: each is seeded by the run's seed and this count

    # -- scores ---------------------------------------------------------------------------------------

    def best_joint(self, prompts: list[tuple[int, ...]], sentences: list[str], samples: int) -> np.ndarray:
        """(prompts, sentences) best joint score of ``samples`` rewrites (1: greedy), cached."""
        keys = [(tuple(p), s, samples) for p in prompts for s in sentences]
        missing = list(dict.fromkeys(k for k in keys if k not in self._best))
        if missing:
            before = self.rewriter.tokens_generated
            outs = self.rewriter.rewrite_pairs([(k[0], k[1]) for k in missing], samples, greedy=samples == 1,
                                               seed=self._next_seed())  # fmt: skip
            best = self.reward.best_of([k[1] for k in missing], outs)
            self._best.update(zip(missing, best.tolist(), strict=True))
            self.stats.pairs_scored += len(missing)
            self.stats.tokens_processed += self.rewriter.tokens_generated - before
        return np.array([self._best[k] for k in keys], dtype=np.float64).reshape(len(prompts), len(sentences))

    def task_token_ids(self, policy_ids) -> list[int]:
        return list(policy_ids)

    def policy_prompt_ids(self, text: str) -> tuple[int, ...]:
        """A text prompt in the policy's tokens, as the rewriter reads a manual instruction."""
        return self.rewriter.prompt_ids(text)

    def _next_seed(self) -> int:
        self._calls += 1
        return self.seed * 1_000_003 + self._calls

    def train_rewards(
        self, prompts: list[tuple[int, ...]], inputs: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt: the reward (per-input z-scores of the best joint score, averaged over the inputs) and
        the mean joint score as a fraction (the batch's progress figure)."""
        joint = self.best_joint(prompts, inputs, self.samples)
        z = (joint - joint.mean(0, keepdims=True)) / (joint.std(0, keepdims=True) + 1e-6)
        return z.mean(1), joint.mean(1) / 100

    def dev(self, prompts: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt: the mean dev joint score as a fraction, twice (no separate tie-breaker)."""
        joint = self.best_joint(prompts, self.task.dev, self.eval_samples).mean(1) / 100
        return joint, joint

    def cached_scores(self) -> dict:
        return {"best": list(self._best.items()), "calls": self._calls}

    def load_cached_scores(self, state: dict) -> None:
        self._best.update(state["best"])
        self._calls = state["calls"]

    # -- what the RL method asks of an objective --------------------------------------------------------

    def elite_scores(self, batch: dict) -> np.ndarray:
        """What ranks a batch's prompts as dev candidates: the mean joint score, not the per-batch z-scores
        (which are not comparable across batches)."""
        return batch["accuracy"]

    def make_env(self, config, seed: int, vocab):
        from rlprompt.envs.prompt_env import PromptVecEnv, StylePromptEnv

        env = StylePromptEnv(self, vocab, config.env.prompt_length, config.env.examples_per_reward)
        return PromptVecEnv.of(env, config.env.num_envs, config.env.normalize, seed)

    def export_fields(self) -> dict:
        return {
            "task_kind": "style",
            "template": REWRITE_TEMPLATE,
            "verbalizers": [],
            "class_names": list(self.task.style_names),
        }

    def test(self, ctx, best, manual: str):
        """The learned prompt, the empty prompt and the manual instruction on the test set."""
        from rlprompt.methods.base import TestResult

        prompts = {"learned": best.ids, "empty": "", "manual": manual}
        document = self.test_report(prompts, ctx.run_dir, self.test_inputs, ctx.progress)
        report, paired = document["prompts"], document["meta"]["paired"]
        learned = report["learned"]
        metrics = {
            "task_direction": self.task.direction, "test_joint": learned["joint"] / 100,
            "test": report, "paired": paired,
            "style_classifier_heldout_accuracy": self.classifier.heldout_accuracy, "manual_prompt": manual,
            # how the test rewrote, for LearnedPrompt.rewrite() to rewrite other sentences the same way
            "rewriting": {
                "target": self.task.style_names[self.task.target], "eval_samples": self.eval_samples,
                "top_k": self.rewriter.top_k, "max_new_tokens": self.rewriter.max_new_tokens,
            },
        }  # fmt: skip
        lines = [format_style_table(report), ""] + [
            f"{name}: joint {p['joint_difference']:+.1f} ± {number(p['standard_error'], 1, 'n/a')} (s.e.), "
            f"learned better on {100 * p['learned_better_on']:.0f}% of the sentences"
            for name, p in paired.items()
        ]  # fmt: skip
        scores = {"joint": learned["joint"] / 100, "j_csf": learned["j_csf"] / 100}
        return TestResult(scores, metrics, "\n".join(lines))

    # -- the test report --------------------------------------------------------------------------------

    def test_report(self, prompts: dict[str, str | tuple[int, ...]], run_dir: Path, limit: int | None = None,
                    progress: bool = True) -> dict:  # fmt: skip
        """Rewrite the test inputs with each named prompt and measure content, style accuracy, fluency, the
        joint scores and BLEU; the human references and the unchanged inputs are measured too, for scale.
        Writes ``style_eval.json`` and ``rewrites.tsv`` (every input with its reference and rewrites) and
        returns what ``style_eval.json`` holds: ``meta`` (settings, and paired differences of the learned
        prompt's joint score with the other prompts and the copied input) and ``prompts`` (the figures per
        row)."""
        from tqdm.auto import tqdm

        inputs, refs = self.task.test[:limit], self.task.references[:limit]
        ref_ppl = sentence_perplexities(self.lm, refs)
        # Fluent: a perplexity under the task LM within the range of 90% of the human rewrites (at most their
        # 90th percentile).
        finite = [p for p in ref_ppl if np.isfinite(p)]
        threshold = float(np.quantile(finite, 0.9)) if finite else float("inf")
        outputs = {"human reference": refs, "input copied": inputs}
        with tqdm(total=len(prompts) * len(inputs), desc="test rewrites", unit="sentence",
                  disable=not progress) as bar:  # fmt: skip
            for label, prompt in prompts.items():
                outputs[label] = evaluation_rewrites(
                    self.rewriter, self.reward, prompt, inputs, self.eval_samples, self.seed, bar
                )
        report, joint = {}, {}
        for label, outs in outputs.items():
            known_ppl = ref_ppl if label == "human reference" else None
            report[label], joint[label] = self._measure(inputs, refs, outs, known_ppl, threshold)
            prompt = prompts.get(label)
            if prompt is not None and not isinstance(prompt, str):
                prompt = self.lm.decode(list(prompt))
            report[label]["prompt"] = prompt
        decoding = "greedy" if self.eval_samples == 1 else f"best of {self.eval_samples} samples"
        meta = {"task": self.task.name, "direction": self.task.direction, "test_inputs": len(inputs),
                "eval_decoding": decoding,
                "bleu": "sacrebleu corpus BLEU against the references, lowercased",
                "selection_note": (
                    "each prompt's rewrite is the best of its samples by the training reward (content + the "
                    "same style classifier that measures style accuracy); the human reference and the copied "
                    "input are single candidates" if self.eval_samples > 1 else "greedy: no selection"),
                "fluent_perplexity_threshold": _finite_or_none(threshold),
                "style_classifier_heldout_accuracy": self.classifier.heldout_accuracy}  # fmt: skip
        paired = {}
        if "learned" in outputs:  # is the learned prompt's lead real? per-sentence differences of the joint
            for other in (label for label in outputs if label not in ("learned", "human reference")):
                diff = (joint["learned"] - joint[other]).astype(np.float64)
                paired[f"learned - {other}"] = {
                    "joint_difference": float(diff.mean()),
                    "standard_error": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
                    "learned_better_on": float(np.mean(diff > 0)),
                }  # fmt: skip
        meta["paired"] = paired
        text = json.dumps({"meta": meta, "prompts": report}, indent=2, ensure_ascii=False) + "\n"
        atomic_write_bytes(Path(run_dir) / "style_eval.json", text.encode("utf-8"))
        labels = list(outputs)
        rows = ["\t".join(["input", *labels])]
        rows += ["\t".join(_tsv_cell(x) for x in [inputs[i]] + [outputs[lab][i] for lab in labels])
                 for i in range(len(inputs))]  # fmt: skip
        atomic_write_bytes(Path(run_dir) / "rewrites.tsv", ("\n".join(rows) + "\n").encode("utf-8"))
        return {"meta": meta, "prompts": report}

    def _measure(self, inputs, refs, outputs, perplexities, threshold) -> tuple[dict, np.ndarray]:
        """The figures of one row of the report, and its per-sentence joint scores (for the paired test)."""
        import sacrebleu

        scores = self.reward.scores(inputs, outputs)
        correct = scores.style >= 50
        ppl = np.array(perplexities if perplexities is not None else sentence_perplexities(self.lm, outputs))
        fluent = ppl <= threshold
        figures = {
            "joint": float(scores.joint.mean()),  # the reward's joint: mean of content and style probability
            "content": float(scores.content.mean()),
            "style_accuracy": float(100 * correct.mean()),
            "fluency": float(100 * fluent.mean()),
            "j_csf": float(np.mean(scores.content * correct * fluent)),  # Krishna et al.'s J(C, S, F)
            "median_perplexity": _finite_or_none(float(np.median(ppl))),  # inf (empty rewrites) is not JSON
            # case-blind: the built-in references are lower-case text, the model's rewrites are not
            "bleu": float(sacrebleu.corpus_bleu(list(outputs), [list(refs)], lowercase=True).score),
        }
        return figures, scores.joint


def format_style_table(report: dict[str, dict]) -> str:
    """The test report as a Markdown table, one row per prompt (and the references and copies)."""
    rows = []
    for label, r in report.items():
        name = label if r.get("prompt") is None else f"{label}: {r['prompt']!r}"
        figures = [r[k] for k in ("joint", "content", "style_accuracy", "fluency", "j_csf", "bleu")]
        rows.append([name, *(f"{x:.1f}" for x in figures), number(r["median_perplexity"], 0, "n/a")])
    headers = ["prompt", "joint", "content", "style acc.", "fluency", "J(C,S,F)", "BLEU", "median ppl"]
    return markdown_table(headers, rows)


def _finite_or_none(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _tsv_cell(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")
