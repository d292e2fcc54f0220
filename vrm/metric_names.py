"""Names of the metrics training logs and sweeps, reports and the demo read, each spelled once.

Training logs ``"<stage>/<name>"`` with stage ``train``, ``val``, ``test`` or ``shifted`` (the test splits).
"""

LOSS, ACC, MARGIN = "loss", "acc", "margin"
REWARD_MEAN, REWARD_STD = "reward_mean", "reward_std"
TRAIN_STAGE, VAL_STAGE = "train", "val"
#: The best validation accuracy so far: the metric sweeps optimise by default (``optimized_metric``).
ACC_BEST = f"{VAL_STAGE}/{ACC}_best"
#: Pairwise accuracy on the in-distribution and the shifted test split.
TEST_ACC, SHIFTED_ACC = f"test/{ACC}", f"shifted/{ACC}"
#: Batches skipped for a non-finite loss, logged at each epoch end.
NONFINITE_METRIC = f"{TRAIN_STAGE}/nonfinite_batches"
