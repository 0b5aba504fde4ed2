#!/usr/bin/env bash
# Regenerate every table in results/ from results/runs.csv (the README quotes these files).
set -euo pipefail
cd "$(dirname "$0")/.."
facebench table --runs results/runs.csv --protocol 10-fold --metric accuracy_10fold --out results/table_10-fold_accuracy.md
T="facebench table --runs results/runs.csv --protocol dev-test"
# SIDE paper Table 1 layout: grey-box, rel-l2 0.04, 1000 dev-test pairs
$T --n-pairs 1000 --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_eer.md
$T --n-pairs 1000 --threat-model rel-l2 --budget 0.04 --goal pair --metric asr --out results/table_dev-test_asr.md
# slow purifiers on 200 pairs, and the adaptive rows
$T --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_greybox200_eer.md
$T --n-pairs 200 --adaptive through --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_adaptive200_eer.md
$T --n-pairs 20 --adaptive through --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_adaptive20_eer.md
# Table 7 (a*), Tables 8 and 10 (trained SIDE variants): 200 pairs (CPU time)
$T --n-pairs 200 --adaptive 'a*' --out results/table7_a-star_eer.md
$T --n-pairs 200 --layout side-ablation --out results/table8_side-ablation_eer.md
$T --n-pairs 200 --layout side-clones --out results/table10_side-clones_eer.md
# issue 5: transfer, LOTS, minimal eps, library backends, Evolutionary (Table 4), AdvHat (Table 6)
$T --n-pairs 200 --adaptive transfer:dlib-resnet --out results/table_transfer_from_dlib_eer.md
$T --n-pairs 200 --adaptive transfer:dlib-resnet+jpeg --out results/table_transfer_from_dlib+jpeg_eer.md
$T --n-pairs 200 --goal impersonation --metric tau_asr_250 --out results/table_lots_impersonation_tau250.md
$T --n-pairs 200 --goal dodging --metric tau_asr_250 --out results/table_lots_dodging_tau250.md
$T --n-pairs 200 --threat-model linf --budget 8 --metric median_min_eps --out results/table_min_eps_linf.md
$T --n-pairs 100 --threat-model linf --budget 0.5 --metric asr --out results/table_library_backends_asr.md
$T --layout table6 --out results/table6_advhat.md
$T --layout table4 --out results/table4_evolutionary_mse.md
# AdvHat with 1000 training steps instead of the default 300 (its own runs CSV)
facebench table --runs results/advhat_steps1000/runs.csv --protocol dev-test --layout table6 --out results/advhat_steps1000/table6.md
# the committed SIDE model's training log (scripts/eigen_topk_eer.py measures, so it is run by hand)
python scripts/training_curve.py weights/side --every 1000 --out results/side_medium_training.md > /dev/null
