#!/usr/bin/env bash
# Benchmarks on real photos: ../shared/data/msrc_objects (351 train images for CAMs and pseudo masks, 90 val
# images for the segmentation model), pretrained EfficientNet-Lite0, whatever device is present.
#
#   bash benchmarks/msrc.sh cam-baseline   # plain CAM (crop 224, 12 epochs)
#   bash benchmarks/msrc.sh random-init    # plain CAM from a random-init backbone, for context (the light
#                                          # schedule of `methods`, to compare with its cam row)
#   bash benchmarks/msrc.sh pipeline       # after cam-baseline: CRF pseudo masks -> DeepLab on them and on GT
#   bash benchmarks/msrc.sh rw             # after cam-baseline: AffinityNet -> random walk -> CRF ladder, with
#                                          # propagation.affinitynet.walk.bg_mode psa and irn, at beta 16 /
#                                          # logt 5 and the published
#                                          # walks (PSA beta 8 logt 8; IRN beta 10, 2^8 steps)
#   bash benchmarks/msrc.sh irn            # after cam-baseline: IRN relation labels -> boundary branch ->
#                                          # boundary random walk -> eval -> CRF -> eval (2^8, 2^3, 2^5 steps)
#   bash benchmarks/msrc.sh propagation-long  # after rw and irn: AffinityNet (8 epochs) and IRN's boundary
#                                          # branch (20 epochs) trained longer, walks + CRF
#   bash benchmarks/msrc.sh propagation-crop  # after cam-baseline: AffinityNet and IRN's branch trained on
#                                          # PROP_CROP (320) crops, whole MSRC photos; walks, CRF
#   bash benchmarks/msrc.sh recam          # after cam-baseline: ReCAM fine-tuning of that classifier (the recam
#                                          # section's defaults, the authors' schedule), its CAMs and CRF pseudo
#                                          # masks, beside plain CAM's (+ per-class IoU of face, body, boat);
#                                          # RECAM_NAME=x RECAM_SETS="--set recam.momentum=0.9" for a variant
#   bash benchmarks/msrc.sh methods        # cam / seam / ppl / cpn side by side (a lighter schedule:
#                                          # crop 160, 6 epochs, so that all four fit a CPU session)
#   bash benchmarks/msrc.sh methods-224    # the same at the CAM baseline's schedule (crop 224, 12 epochs),
#                                          # PPL's fusion variant with its no-patch control, CPN with the
#                                          # per-class key layout (on a GPU: benchmarks/gpu_methods.sh)
#   bash benchmarks/msrc.sh investigate    # ablations behind the methods table (light schedule)
#   bash benchmarks/msrc.sh deeplab        # after cam-baseline: DeepLab on pseudo masks vs ground truth at
#                                          # SEG_STEPS (1,200) steps, batch 8, crop 160, trained identically;
#                                          # the training variants of the DeepLab table (ONLY="name ..." runs
#                                          # a subset; makes the CRF pseudo masks first if missing)
#   bash benchmarks/msrc.sh deeplab-crops  # what train_seg's crops show the network (resize factor, padding)
#                                          # per train_seg.scale_reference; seconds, no training
#   bash benchmarks/msrc.sh deeplab-eval   # the last DeepLab trained on LABELS (pseudo | gt) on MSRC train
#                                          # (single scale, against the real masks) and on val with the CRF
#   bash benchmarks/msrc.sh pseudo-val     # after cam-baseline: the pseudo-mask generator (CAM + CRF) run on the
#                                          # val images, to compare with the DeepLab models on the same images
#   bash benchmarks/msrc.sh single         # the single-stage branch on generated scribbles: full supervision,
#                                          # pCE, pCE + CRF loss, DFR; and image labels (DFR on CAM seeds);
#                                          # then the ablations behind the defaults.
#                                          # train_seg's schedule (crop 160, 300 steps), so the image-label row
#                                          # compares with the `pipeline` DeepLab (ROWS="name ..." runs a subset)
#
# Each run appends one JSON line per configuration to benchmarks/results/<name>.jsonl (stage wall times,
# metrics, peak RSS); benchmarks/README.md holds the tables made from them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MSRC_ROOT:-../shared/data/msrc_objects}
OUT=${BENCH_OUT:-bench_outputs}
mkdir -p benchmarks/results
COMMON=(--set "data.root=$DATA" --set backbone.name=efficientnet_lite0 --set backbone.pretrained=imagenet --set backbone.output_stride=16
        --set train_cls.crop_size=224 --set train_cls.epochs=12 --set train_cls.batch_size=16
        --set propagation.affinitynet.train.crop_size=224 --set propagation.affinitynet.train.epochs=3
        --set propagation.affinitynet.walk.beta=16 --set propagation.affinitynet.walk.logt=5
        --set propagation.affinitynet.train.grid_stride=8 --set propagation.affinitynet.train.pair_set=psa
        --set propagation.affinitynet.train.embed_dim=448 --set propagation.affinitynet.train.lr=0.01
        --set train_seg.crop_size=160 --set train_seg.steps=300 --set train_seg.val_every=300
        --set propagation.irn.train.epochs=3 --set propagation.irn.train.batch_size=16
        --set propagation.irn.walk.exp_times=8)  # IRN's 2^8-step walk, as every MSRC row so far (params.yaml: 2^3)
run() { python benchmarks/run_stages.py "${COMMON[@]}" "$@"; }

case "${1:-}" in
  cam-baseline)
    run --out "$OUT/msrc" --summary benchmarks/results/cam_baseline.jsonl --stages data train_cls cam eval_cam
    ;;
  random-init)
    run --out "$OUT/msrc_random" --set backbone.pretrained=none --set train_cls.crop_size=160 \
        --set train_cls.epochs=6 --summary benchmarks/results/cam_baseline.jsonl --stages data train_cls cam eval_cam
    ;;
  pipeline)
    run --out "$OUT/msrc" --summary benchmarks/results/pipeline.jsonl --stages crf eval_pseudo train_seg eval_seg
    run --out "$OUT/msrc" --set train_seg.labels=gt --summary benchmarks/results/pipeline.jsonl \
        --stages train_seg eval_seg
    ;;
  rw)
    # propagation.affinitynet.walk.bg_mode psa (default) trains AffinityNet; the variants reuse it (ONLY="name ..." runs a subset
    # of the variants; the first must have run once)
    walk() {
      name=$1; shift
      [[ -z "${ONLY:-}" || " $ONLY " == *" $name "* ]] || return 0
      run --out "$OUT/msrc" --set crf.source=affinitynet --summary benchmarks/results/rw.jsonl "$@"
    }
    walk psa --stages prop_labels@affinitynet train_prop@affinitynet walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    walk irn --set propagation.affinitynet.walk.bg_mode=irn --stages walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    walk psa_alpha16 --set propagation.affinitynet.walk.bg_alpha=16 --stages walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    walk irn_bg025 --set propagation.affinitynet.walk.bg_mode=irn --set propagation.affinitynet.walk.bg_threshold=0.25 --stages walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    walk psa_published --set propagation.affinitynet.walk.beta=8 --set propagation.affinitynet.walk.logt=8 --set propagation.affinitynet.walk.bg_alpha=16 --stages walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    walk irn_published --set propagation.affinitynet.walk.bg_mode=irn --set propagation.affinitynet.walk.beta=10 --set propagation.affinitynet.walk.logt=8 --set propagation.affinitynet.walk.bg_threshold=0.25 \
        --stages walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    ;;
  irn)
    run --out "$OUT/msrc" --set crf.source=irn --set propagation.irn.train.crop_size=224 \
        --summary benchmarks/results/irn.jsonl --stages prop_labels@irn train_prop@irn walk@irn eval_walk@irn crf eval_pseudo
    for steps in 3 5; do  # shorter walks on the same boundary branch
      run --out "$OUT/msrc" --set crf.source=irn --set propagation.irn.walk.exp_times=$steps \
          --summary benchmarks/results/irn.jsonl --stages walk@irn eval_walk@irn crf eval_pseudo
    done
    ;;
  propagation-long)
    # after cam-baseline and `irn`/`rw` (their labels): AffinityNet and IRN's boundary branch trained longer
    # than the ladder's 3 epochs (AFF_EPOCHS 8, PSA's; IRN_EPOCHS 20, ~440 SGD steps of 16), each walk then
    # CRF'd; the IRN walk also at 2^3 and 2^5 steps. Overwrites crf/cam (the pseudo masks) as rw and irn do.
    run --out "$OUT/msrc" --set crf.source=irn --set propagation.irn.train.crop_size=224 \
        --set propagation.irn.train.epochs="${IRN_EPOCHS:-20}" --summary benchmarks/results/propagation_long.jsonl \
        --stages train_prop@irn walk@irn eval_walk@irn crf eval_pseudo
    for steps in 3 5; do
      run --out "$OUT/msrc" --set crf.source=irn --set propagation.irn.walk.exp_times=$steps \
          --summary benchmarks/results/propagation_long.jsonl --stages walk@irn eval_walk@irn crf eval_pseudo
    done
    if [[ "${AFF_EPOCHS:-8}" != 0 ]]; then  # AFF_EPOCHS=0: the IRN part only
      run --out "$OUT/msrc" --set crf.source=affinitynet --set propagation.affinitynet.train.epochs="${AFF_EPOCHS:-8}" \
          --summary benchmarks/results/propagation_long.jsonl --stages train_prop@affinitynet walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    fi
    ;;
  propagation-crop)
    # after cam-baseline: AffinityNet and IRN's boundary branch trained on crops of PROP_CROP (320: whole MSRC
    # photos, as IRN's 512 crops hold whole VOC photos) instead of the ladder's 224, 3 epochs each, walks
    # then CRF; in msrc_crop<N>/ beside msrc/ (whose data, classifier and CAMs it links)
    crop=${PROP_CROP:-320}
    dir="$OUT/msrc_crop$crop"
    mkdir -p "$dir"
    for stage in data train_cls cam eval_cam; do ln -sfn "../msrc/$stage" "$dir/$stage"; done
    run --out "$dir" --set crf.source=affinitynet --set propagation.affinitynet.train.crop_size="$crop" \
        --summary benchmarks/results/propagation_crop.jsonl --stages prop_labels@affinitynet train_prop@affinitynet walk@affinitynet eval_walk@affinitynet crf eval_pseudo
    run --out "$dir" --set crf.source=irn --set propagation.irn.train.crop_size="$crop" \
        --summary benchmarks/results/propagation_crop.jsonl --stages prop_labels@irn train_prop@irn walk@irn eval_walk@irn crf eval_pseudo
    ;;
  recam)
    # plain CAM's pseudo masks in msrc/ (made if missing); ReCAM in msrc_<RECAM_NAME>/, which links msrc/'s
    # data index and classifier
    if [[ ! -d "$OUT/msrc/crf/cam" ]]; then
      run --out "$OUT/msrc" --summary benchmarks/results/recam.jsonl --stages crf eval_pseudo
    else
      run --out "$OUT/msrc" --summary benchmarks/results/recam.jsonl --stages eval_cam eval_pseudo
    fi
    dir="$OUT/msrc_${RECAM_NAME:-recam}"
    mkdir -p "$dir"
    for stage in data train_cls; do ln -sfn "../msrc/$stage" "$dir/$stage"; done
    # shellcheck disable=SC2086  # RECAM_SETS is a list of --set options
    run --out "$dir" --set recam.enabled=true ${RECAM_SETS:-} --summary benchmarks/results/recam.jsonl \
        --stages recam cam eval_cam crf eval_pseudo
    for stage in eval_cam eval_pseudo; do
      for run_dir in "$OUT/msrc" "$dir"; do
        python - "$run_dir/$stage/cam/per_class.csv" <<'PY'
import csv, sys
rows = {r["class"]: r["iou"] for r in csv.DictReader(open(sys.argv[1]))}
print(sys.argv[1], " ".join(f"{c} {100 * float(rows[c]):.1f}" for c in ("face", "body", "boat")))
PY
      done
    done
    ;;
  methods)
    for method in ${METHODS:-cam seam ppl cpn}; do
      run --out "$OUT/msrc_methods" --set "method=$method" --set train_cls.crop_size=160 --set train_cls.epochs=6 \
          --summary benchmarks/results/methods.jsonl --stages data train_cls cam eval_cam
    done
    ;;
  methods-224)
    # default options of every method from params.yaml, plus PPL's explicit fusion variant
    # (ONLY="name ..." runs a subset)
    variant() {
      name=$1; shift
      [[ -z "${ONLY:-}" || " $ONLY " == *" $name "* ]] || return 0
      run --out "$OUT/msrc_methods_224/$name" --summary benchmarks/results/methods_224.jsonl \
          --stages data train_cls cam eval_cam "$@"
    }
    variant cam --set method=cam
    variant seam --set method=seam
    variant ppl --set method=ppl
    variant ppl_fusion --set method=ppl --set methods.ppl.fusion=true
    variant cpn --set method=cpn
    variant cpn_per_class --set method=cpn --set methods.cpn.key_layout=per_class  # the paper's reading
    variant ppl_fusion_ctrl --set method=ppl --set methods.ppl.fusion=true --set 'methods.ppl.granularities=[1,1,1]'
    # ablations: which term costs what (SEAM: both branches classified, PCM trained by the low-activation
    # term only; CPN: I, I1, I2 classified, no L_CP, no PRCM, raw read-out)
    variant seam_clsonly --set method=seam --set methods.seam.er_weight=0 --set methods.seam.ecr_weight=0
    variant cpn_clsonly --set method=cpn --set methods.cpn.cp_weight=0 --set methods.cpn.prcm_weight=0 \
        --set methods.cpn.cam_source=raw
    ;;
  investigate)
    light() { name=$1; shift; run --out "$OUT/inv/$name" --set train_cls.crop_size=160 --set train_cls.epochs=6 \
                --summary benchmarks/results/investigate.jsonl --stages data train_cls cam eval_cam "$@"; }
    light cam_os16 --set method=cam
    light cam_os8 --set method=cam --set backbone.output_stride=8
    light seam_v2 --set method=seam
    light seam_s05 --set method=seam --set methods.seam.scale=0.5
    light seam_os8 --set method=seam --set backbone.output_stride=8
    light seam_clsonly --set method=seam --set methods.seam.er_weight=0 --set methods.seam.ecr_weight=0
    light seam_er --set method=seam --set methods.seam.ecr_weight=0
    light ppl_g12 --set method=ppl --set 'methods.ppl.granularities=[1,2]'
    light ppl_fusion --set method=ppl --set methods.ppl.fusion=true
    light ppl_fusion_ctrl --set method=ppl --set methods.ppl.fusion=true --set 'methods.ppl.granularities=[1,1,1]'
    light ppl_aux --set method=ppl --set methods.ppl.aux_stage=-2
    light cpn_v2 --set method=cpn
    light cpn_slic40 --set method=cpn --set methods.cpn.patch_mode=slic --set methods.cpn.n_segments=40
    light cpn_grid8 --set method=cpn --set methods.cpn.grid_size=8
    light cpn_clsonly --set method=cpn --set methods.cpn.cp_weight=0 --set methods.cpn.prcm_weight=0 \
          --set methods.cpn.cam_source=raw
    ;;
  deeplab)
    steps=${SEG_STEPS:-1200}
    if [[ -z "${ONLY:-}" || " $ONLY " == *" weak_"* ]] && [[ ! -d "$OUT/msrc/crf/cam" ]]; then
      run --out "$OUT/msrc" --summary benchmarks/results/deeplab.jsonl --stages crf eval_pseudo
    fi
    seg() {
      name=$1; shift
      [[ -z "${ONLY:-}" || " $ONLY " == *" $name "* ]] || return 0
      run --out "$OUT/msrc" --set train_seg.steps="$steps" --set train_seg.val_every="$steps" \
          --summary benchmarks/results/deeplab.jsonl --stages train_seg eval_seg "$@"
    }
    # every row names its batch-norm and learning-rate settings; the defaults since session 5 are the
    # frozen_lr1e-3 rows (train_seg.freeze_backbone_bn auto -> frozen for a pretrained backbone, lr 1e-3)
    bn_lr() { echo --set train_seg.freeze_backbone_bn="$1" --set train_seg.lr="$2"; }
    seg weak_crop --set train_seg.scale_reference=crop $(bn_lr false 0.01)
    seg full_crop --set train_seg.labels=gt --set train_seg.scale_reference=crop $(bn_lr false 0.01)
    seg weak_image --set train_seg.scale_reference=image $(bn_lr false 0.01)
    seg full_image --set train_seg.labels=gt --set train_seg.scale_reference=image $(bn_lr false 0.01)
    seg weak_image_frozen --set train_seg.scale_reference=image $(bn_lr true 0.01)
    seg full_image_frozen --set train_seg.labels=gt --set train_seg.scale_reference=image $(bn_lr true 0.01)
    seg weak_image_lr1e-3 --set train_seg.scale_reference=image $(bn_lr false 0.001)
    seg weak_image_frozen_lr1e-3 --set train_seg.scale_reference=image $(bn_lr true 0.001)
    seg full_image_frozen_lr1e-3 --set train_seg.labels=gt --set train_seg.scale_reference=image $(bn_lr true 0.001)
    ;;
  deeplab-crops)
    python benchmarks/seg_crop_stats.py --root "$DATA" --crop 160
    ;;
  deeplab-eval)
    labels=${LABELS:-pseudo}
    run --out "$OUT/msrc" --set train_seg.labels="$labels" --set data.val_split=train --set 'eval_seg.scales=[1.0]' \
        --set eval_seg.flip=false --summary benchmarks/results/deeplab.jsonl --stages eval_seg
    run --out "$OUT/msrc" --set train_seg.labels="$labels" --set eval_seg.use_crf=true \
        --summary benchmarks/results/deeplab.jsonl --stages eval_seg
    ;;
  pseudo-val)
    # the label generator of the `deeplab` rows (the cam-baseline classifier, CAM + CRF at train's best CAM
    # threshold) applied to the 90 val images, where the DeepLab models are evaluated
    mkdir -p "$OUT/msrc_val" && ln -sfn ../msrc/train_cls "$OUT/msrc_val/train_cls"
    threshold=$(python -c "import json; print(json.load(open('$OUT/msrc/eval_cam/cam/metrics.json'))['best_threshold'])")
    run --out "$OUT/msrc_val" --set data.train_split=val --set crf.bg_threshold="$threshold" \
        --summary benchmarks/results/deeplab.jsonl --stages data cam eval_cam crf eval_pseudo
    ;;
  single)
    row() {
      name=$1; shift
      [[ -z "${ROWS:-}" || " $ROWS " == *" $name "* ]] || return 0
      run --out "$OUT/msrc_single" --set single.crop_size=160 --set single.steps=300 --set single.val_every=300 \
          --set single.batch_size=8 --summary benchmarks/results/single.jsonl "$@"
    }
    row scribbles --stages data scribbles
    # the defaults (sigma_xy auto = 31 at crop 160, crf_weight 2, crf_scale 0.25; image labels: a third of
    # the steps of warm-up, seeds 0.55 / 0.35)
    row full --set single.supervision=full --set single.loss=pce --stages train_single eval_single
    row pce --set single.supervision=scribble --set single.loss=pce --stages train_single eval_single
    row crf --set single.supervision=scribble --set single.loss=crf --stages train_single eval_single
    row dfr --set single.supervision=scribble --set single.loss=dfr --stages train_single eval_single
    row image --set single.supervision=image --set single.loss=dfr --stages train_single eval_single
    row image_pce --set single.supervision=image --set single.loss=pce --stages train_single eval_single
    # ablations: rloss's literal kernel (sigma_xy 100 px, which spans most of a 160 crop; rloss's 513 crops
    # of 500 px VOC images make the same kernel 31 px here) and weight (2e-9 ~ 8.7), heavier weight, rloss's
    # scale 0.5 (the default 0.25 halves the grid for the exact dense kernel's P^2 cost), image labels
    # without warm-up and with ToCo's seed thresholds 0.7 / 0.25
    row crf_rloss --set single.supervision=scribble --set single.loss=crf --set single.sigma_xy=100 \
        --set single.crf_weight=8.7 --stages train_single eval_single
    row dfr_rloss --set single.supervision=scribble --set single.loss=dfr --set single.sigma_xy=100 \
        --set single.crf_weight=8.7 --stages train_single eval_single
    row crf_w8.7 --set single.supervision=scribble --set single.loss=crf --set single.crf_weight=8.7 \
        --stages train_single eval_single
    row dfr_w8.7 --set single.supervision=scribble --set single.loss=dfr --set single.crf_weight=8.7 \
        --stages train_single eval_single
    row crf_w30 --set single.supervision=scribble --set single.loss=crf --set single.crf_weight=30 \
        --stages train_single eval_single
    row crf_s05_rloss --set single.supervision=scribble --set single.loss=crf --set single.crf_scale=0.5 \
        --set single.sigma_xy=100 --set single.crf_weight=8.7 --set paths.outputs="$OUT/msrc_single_s05" \
        --stages data scribbles train_single eval_single
    row image_nowarm_toco --set single.supervision=image --set single.loss=dfr --set single.warmup_steps=0 \
        --set single.seed_fg=0.7 --set single.seed_bg=0.25 --stages train_single eval_single
    ;;
  *) echo "usage: bash benchmarks/msrc.sh cam-baseline|random-init|pipeline|rw|irn|recam|methods|methods-224|investigate|propagation-long|propagation-crop|deeplab|deeplab-crops|deeplab-eval|pseudo-val|single" >&2
     exit 2 ;;
esac
