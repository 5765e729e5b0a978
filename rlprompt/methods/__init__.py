"""Training methods behind one interface: ``run(context) -> MethodResult``.

Every method trains (or not) on the same training split, evaluates on dev through the Scorer at
``config.evaluations`` evenly spaced points of its budget, keeps its best checkpoint by dev accuracy,
reports that checkpoint's test accuracy and writes its artifact into its run directory. The driver
(:mod:`rlprompt.train`) runs methods over seeds and builds the comparison report (:mod:`rlprompt.report`).

=============  ==============================================  ==============  ============
method         what is learned                                 interpretable   transferable
=============  ==============================================  ==============  ============
rl             a discrete prompt (policy trained by RL)        yes             yes
soft_prompt    prompt embeddings at the {prompt} slot (PEFT)   no              no
lora           low-rank weight updates (PEFT)                  no              no
full_finetune  every weight of the task LM                     no              no
manual         nothing: the best hand-written prompt on dev    yes             yes
in_context     nothing: k labelled demonstrations before each  yes             yes
=============  ==============================================  ==============  ============
"""

from __future__ import annotations

from rlprompt.checkpoint import remove_checkpoint
from rlprompt.methods.base import (  # noqa: F401 - the package's public names
    REFERENCES,
    EvalLog,
    MethodContext,
    MethodResult,
    TestResult,
    dev_accuracy,
    path_bytes,
)

INTERPRETABLE = {"rl": True, "soft_prompt": False, "lora": False, "full_finetune": False, "manual": True,
                 "in_context": True}  # fmt: skip
TRANSFERABLE = dict(INTERPRETABLE)  # text moves to other models; weights and embeddings do not
# What each method needs of the task LM's backend (rlprompt.backends.Capability names).
NEEDS = {
    "rl": ("LABEL_LOGPROBS",),
    "soft_prompt": ("DIFFERENTIABLE",),
    "lora": ("DIFFERENTIABLE",),
    "full_finetune": ("DIFFERENTIABLE",),
    "manual": ("LABEL_LOGPROBS",),
    "in_context": ("LABEL_LOGPROBS",),
}
STYLE_NEEDS = ("GENERATION", "SEQUENCE_LOGLIK")  # style transfer rewrites text and scores its fluency


def run_method(name: str, context: MethodContext) -> MethodResult:
    """Run method ``name`` in ``context``; the result is also saved as ``result.json``."""
    if name == "rl":
        from rlprompt.methods.rl import run
    elif name in ("soft_prompt", "lora", "full_finetune"):
        from rlprompt.methods.tuning import run_tuning

        def run(ctx):
            return run_tuning(name, ctx)
    elif name == "manual":
        from rlprompt.methods.fixed import run_manual as run
    else:
        from rlprompt.methods.fixed import run_in_context as run
    result = run(context)
    result.save(context.run_dir)
    if not result.interrupted:
        remove_checkpoint(context.run_dir)  # finished: result.json marks it; the checkpoint is dead weight
    return result
