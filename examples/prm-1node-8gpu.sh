#!/usr/bin/env bash
# `codeprm train prm` on one node with 8 GPUs (docs/prm.md, "Training on several GPUs").
#
# Global batch: batch-size x grad-accum x processes = 4 x 2 x 8 = 64 programs per step, the
# same as examples/prm-2nodes.sh, so a run can move between the two and resume.
# Up to ~3B parameters: --parallel ddp. 7B: --parallel fsdp --gradient-checkpointing (below).
set -euo pipefail

torchrun --standalone --nproc-per-node 8 -m codeprm train prm \
    --data labels.jsonl \
    --base-model /ckpt/Qwen2.5-Coder-7B \
    --out prm-7b/ \
    --parallel fsdp --gradient-checkpointing \
    --batch-size 4 --grad-accum 2 \
    --lr 1e-5 --epochs 3 --max-tokens 2048

# The same under Accelerate's launcher (it sets the same variables torchrun does):
#   accelerate launch --multi_gpu --num_processes 8 -m codeprm train prm ...
