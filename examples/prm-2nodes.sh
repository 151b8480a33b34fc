#!/usr/bin/env bash
# `codeprm train prm` on 2 nodes x 8 GPUs (docs/prm.md, "Training on several GPUs").
# Run on both nodes, with the same --out on a filesystem both see (rank 0 writes it; on a
# resume every process reads the checkpoint):
#
#   NODE_RANK=0 MASTER_ADDR=node0.example bash examples/prm-2nodes.sh     # on node 0
#   NODE_RANK=1 MASTER_ADDR=node0.example bash examples/prm-2nodes.sh     # on node 1
#
# Global batch: 4 x 1 x 16 = 64 programs per step, as examples/prm-1node-8gpu.sh.
set -euo pipefail

torchrun --nnodes 2 --node-rank "$NODE_RANK" --nproc-per-node 8 \
    --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:29500" --rdzv-id codeprm-prm \
    -m codeprm train prm \
    --data /shared/labels.jsonl \
    --base-model /shared/ckpt/Qwen2.5-Coder-7B \
    --out /shared/prm-7b/ \
    --parallel fsdp --gradient-checkpointing \
    --batch-size 4 --grad-accum 1 \
    --lr 1e-5 --epochs 3 --max-tokens 2048
