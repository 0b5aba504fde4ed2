#!/usr/bin/env bash
# Regenerate every table in results/ from results/runs.csv (the README quotes these files).
# A table never mixes configurations: each command pins dataset, protocol, recognizer, n_pairs
# and the attack's threat model, budget, goal and knowledge (`facebench table` refuses rows that
# differ in a field left open).
set -euo pipefail
cd "$(dirname "$0")/.."
# one process renders them all (one import of the plugins); one line per table
facebench table --batch - <<'TABLES'
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol 10-fold --n-pairs 6000 --metric accuracy_10fold --out results/table_10-fold_accuracy.md
# SIDE paper Table 1 layout: grey-box, rel-l2 0.04, 1000 dev-test pairs
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 1000 --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 1000 --threat-model rel-l2 --budget 0.04 --goal pair --metric asr --out results/table_dev-test_asr.md
# slow purifiers on 200 pairs, and the adaptive rows
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_greybox200_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --adaptive through --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_adaptive200_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 20 --adaptive through --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_dev-test_adaptive20_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 20 --adaptive through --threat-model linf --budget 8 --goal pair --out results/table_dev-test_adaptive20_linf_eer.md
# Table 7 (a*), Tables 8 and 10 (trained SIDE variants): 200 pairs (CPU time)
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --adaptive 'a*' --threat-model rel-l2 --budget 0.04 --goal pair --out results/table7_a-star_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal pair --layout side-ablation --out results/table8_side-ablation_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal pair --layout side-clones --out results/table10_side-clones_eer.md
# issue 5: transfer, LOTS, minimal eps, library backends, Evolutionary (Table 4), AdvHat (Table 6)
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --adaptive transfer:dlib-resnet --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_transfer_from_dlib_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --adaptive transfer:dlib-resnet+jpeg --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_transfer_from_dlib+jpeg_eer.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal impersonation --metric tau_asr_250 --out results/table_lots_impersonation_tau250.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal dodging --metric tau_asr_250 --out results/table_lots_dodging_tau250.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 200 --threat-model linf --budget 8 --goal pair --metric median_min_eps --out results/table_min_eps_linf.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 100 --threat-model linf --budget 0.5 --goal pair --metric asr --out results/table_library_backends_asr.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 962 --layout table6 --out results/table6_advhat.md
--runs results/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 50 --layout table4 --out results/table4_evolutionary_mse.md
# AdvHat on sface (ArcFace family, the paper's recognizer family; sticker placed by the crop's eye and mouth lines)
--runs results/runs.csv --dataset lfw --recognizer sface --protocol dev-test --n-pairs 962 --layout table6 --out results/table6_advhat_sface.md
# AdvHat with 1000 training steps instead of the default 300 (its own runs CSV)
--runs results/advhat_steps1000/runs.csv --dataset lfw --recognizer dlib-resnet --protocol dev-test --n-pairs 962 --layout table6 --out results/advhat_steps1000/table6.md
# the recognizer zoo: 10-fold accuracy per alignment, raw photos through --align detect vs the
# LFW protocol on the same dev-test pairs, Table 1 per recognizer, the transfer matrices
--runs results/runs.csv --layout recognizer-attack --dataset lfw --protocol 10-fold --n-pairs 6000 --defense none --attack none --metric accuracy_10fold --out results/table_zoo_10-fold_accuracy.md
--runs results/runs.csv --layout recognizer-attack --dataset lfw --protocol dev-test --n-pairs 1000 --defense none --attack none --out results/table_zoo_dev-test_clean_eer.md
--runs results/runs.csv --layout recognizer-attack --dataset pairs --protocol devtest.csv --n-pairs 1000 --defense none --attack none --out results/table_zoo_raw_photos_eer.md
--runs results/runs.csv --layout recognizer-attack --dataset lfw --protocol dev-test --n-pairs 200 --defense none --threat-model rel-l2 --budget 0.04 --goal pair --out results/table_zoo_dev-test200_eer.md
--runs results/runs.csv --layout transfer-matrix --dataset lfw --protocol dev-test --n-pairs 200 --defense none --attack pgd --threat-model rel-l2 --budget 0.04 --goal pair --metric asr --out results/table_transfer_matrix_pgd_asr.md
--runs results/runs.csv --layout transfer-matrix --dataset lfw --protocol dev-test --n-pairs 200 --defense none --attack pgd --threat-model rel-l2 --budget 0.04 --goal pair --metric eer --out results/table_transfer_matrix_pgd_eer.md
--runs results/runs.csv --layout transfer-matrix --dataset lfw --protocol dev-test --n-pairs 200 --defense none --attack mi-fgsm --threat-model rel-l2 --budget 0.04 --goal pair --metric asr --out results/table_transfer_matrix_mi-fgsm_asr.md
--runs results/runs.csv --layout transfer-matrix --dataset lfw --protocol dev-test --n-pairs 200 --defense none --attack mi-fgsm --threat-model rel-l2 --budget 0.04 --goal pair --metric eer --out results/table_transfer_matrix_mi-fgsm_eer.md
TABLES
# heatmaps of the two ASR matrices, from the same cells
for attack in pgd mi-fgsm; do
  python scripts/transfer_heatmap.py --runs results/runs.csv --attack "$attack" --metric asr --dataset lfw --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 --goal pair --out "results/transfer_matrix_${attack}_asr.png" > /dev/null
done
# the committed SIDE model's training log, and the worst case per defense (scripts/eigen_topk_eer.py,
# side_report.py and zoo_table.py measure models, so they are run by hand)
python scripts/training_curve.py weights/side --every 250 --out results/side_training.md > /dev/null
python scripts/robust_summary.py --out results/robust_summary.md > /dev/null
