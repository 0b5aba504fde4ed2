#!/usr/bin/env bash
# Regenerate every table in results/ from results/runs.csv (the README quotes these files).
# A table never mixes configurations: each command pins dataset, protocol, recognizer, n_pairs
# and the attack's threat model, budget, goal and knowledge (`facebench table` refuses rows that
# differ in a field left open).
set -euo pipefail
cd "$(dirname "$0")/.."
facebench table --runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol 10-fold --n-pairs 6000 --metric accuracy_10fold --out results/table_10-fold_accuracy.md
T="facebench table --runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test"
G="--threat-model rel-l2 --budget 0.04 --goal pair"  # the SIDE paper's grey-box setting
# SIDE paper Table 1 layout: grey-box, rel-l2 0.04, 1000 dev-test pairs
$T --n-pairs 1000 $G --out results/table_dev-test_eer.md
$T --n-pairs 1000 $G --metric asr --out results/table_dev-test_asr.md
# slow purifiers on 200 pairs, and the adaptive rows
$T --n-pairs 200 $G --out results/table_dev-test_greybox200_eer.md
$T --n-pairs 200 --adaptive through $G --out results/table_dev-test_adaptive200_eer.md
$T --n-pairs 20 --adaptive through $G --out results/table_dev-test_adaptive20_eer.md
# Table 7 (a*), Tables 8 and 10 (trained SIDE variants): 200 pairs (CPU time)
$T --n-pairs 200 --adaptive 'a*' $G --out results/table7_a-star_eer.md
$T --n-pairs 200 $G --layout side-ablation --out results/table8_side-ablation_eer.md
$T --n-pairs 200 $G --layout side-clones --out results/table10_side-clones_eer.md
# issue 5: transfer, LOTS, minimal eps, library backends, Evolutionary (Table 4), AdvHat (Table 6)
$T --n-pairs 200 --adaptive transfer:dlib-resnet $G --out results/table_transfer_from_dlib_eer.md
$T --n-pairs 200 --adaptive transfer:dlib-resnet+jpeg $G --out results/table_transfer_from_dlib+jpeg_eer.md
$T --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal impersonation --metric tau_asr_250 --out results/table_lots_impersonation_tau250.md
$T --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal dodging --metric tau_asr_250 --out results/table_lots_dodging_tau250.md
$T --n-pairs 200 --threat-model linf --budget 8 --goal pair --metric median_min_eps --out results/table_min_eps_linf.md
$T --n-pairs 100 --threat-model linf --budget 0.5 --goal pair --metric asr --out results/table_library_backends_asr.md
$T --n-pairs 962 --layout table6 --out results/table6_advhat.md
$T --n-pairs 50 --layout table4 --out results/table4_evolutionary_mse.md
# AdvHat with 1000 training steps instead of the default 300 (its own runs CSV)
facebench table --runs results/advhat_steps1000/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 962 --layout table6 --out results/advhat_steps1000/table6.md
# the committed SIDE model's training log (scripts/eigen_topk_eer.py measures, so it is run by hand)
python scripts/training_curve.py weights/side --every 1000 --out results/side_medium_training.md > /dev/null
