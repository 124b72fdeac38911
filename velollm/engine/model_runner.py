"""Model runner: owns the model and the paged KV cache; turns a ScheduledBatch into logits."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from velollm.config import CacheConfig, ModelConfig
from velollm.engine.forward_context import AttentionMetadata, forward_context
from velollm.engine.loader.source import ModelSource
from velollm.engine.models.layers import RotaryEmbedding
from velollm.engine.models.registry import model_class
from velollm.engine.scheduler import ScheduledBatch

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_GPU_ACTIVATION_RESERVE = 1 << 30


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    metadata: AttentionMetadata
    logits_indices: torch.Tensor
    sampled_rows: list[int]  # batch rows whose logits are sampled this step


class ModelRunner:
    def __init__(self, source: ModelSource, device: torch.device, cache_config: CacheConfig,
                 max_num_seqs: int, max_model_len: int) -> None:
        self.config: ModelConfig = source.config
        self.device = device
        self.dtype = TORCH_DTYPES[self.config.dtype]
        self.block_size = cache_config.block_size
        self.model = self._load_model(source)
        self.num_blocks = self._num_kv_blocks(cache_config, max_num_seqs, max_model_len)
        self.kv_caches = self._allocate_kv_cache(self.num_blocks)
        self.num_forward_tokens = 0  # tokens actually run through the model (prefix-cache tests read it)

    def _load_model(self, source: ModelSource) -> torch.nn.Module:
        # Built on the meta device so the weights are materialised once, straight from the checkpoint stream.
        with torch.device("meta"):
            model = model_class(self.config)(self.config)
        model = model.to(dtype=self.dtype).to_empty(device=self.device)
        model.tie_weights()
        for module in model.modules():
            if isinstance(module, RotaryEmbedding):
                from velollm import kernels

                cfg = self.config
                module.cos_sin_cache = kernels.build_cos_sin_cache(
                    cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling
                ).to(self.device)
        model.load_weights(
            (name, tensor.to(self.device, self.dtype)) for name, tensor in source.iter_weights()
        )
        return model.eval()

    def kv_bytes_per_block(self) -> int:
        cfg = self.config
        return 2 * cfg.num_hidden_layers * self.block_size * cfg.num_key_value_heads * cfg.head_dim * self.dtype.itemsize

    def _num_kv_blocks(self, cache_config: CacheConfig, max_num_seqs: int, max_model_len: int) -> int:
        if cache_config.kv_cache_memory is not None:
            budget = cache_config.kv_cache_memory
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            budget = int(total * cache_config.gpu_memory_utilization) - (total - free) - _GPU_ACTIVATION_RESERVE
        else:
            budget = CacheConfig.DEFAULT_CPU_KV_BYTES
        # Never more than every sequence at full length could use: torch.empty on CPU is lazy anyway.
        useful = max_num_seqs * -(-max_model_len // self.block_size) + 1
        num_blocks = min(budget // self.kv_bytes_per_block(), useful)
        if num_blocks < 2:
            raise ValueError(f"KV cache budget of {budget} bytes holds fewer than 2 blocks of "
                             f"{self.kv_bytes_per_block()} bytes; raise kv_cache_memory")
        return int(num_blocks)

    def _allocate_kv_cache(self, num_blocks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        shape = (cfg.num_hidden_layers, 2, num_blocks, self.block_size, cfg.num_key_value_heads, cfg.head_dim)
        cache = torch.empty(shape, dtype=self.dtype, device=self.device)
        logger.info("KV cache: %d blocks of %d tokens (%.1f MiB)", num_blocks, self.block_size,
                    cache.numel() * cache.element_size() / 2**20)
        return [(cache[i, 0], cache[i, 1]) for i in range(cfg.num_hidden_layers)]

    def release(self) -> None:
        self.kv_caches = []

    def prepare(self, batch: ScheduledBatch) -> StepInputs:
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        context_lens: list[int] = []
        cu_seqlens_q = [0]
        logits_indices: list[int] = []
        sampled_rows: list[int] = []
        bs = self.block_size
        for row, (request, num_new) in enumerate(zip(batch.requests, batch.num_scheduled_tokens)):
            start = request.num_computed_tokens
            end = start + num_new
            input_ids.extend(request.token_ids_slice(start, end))
            positions.extend(range(start, end))
            table = request.block_table
            slot_mapping.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            context_lens.append(end)
            cu_seqlens_q.append(cu_seqlens_q[-1] + num_new)
            if batch.samples(row):
                logits_indices.append(cu_seqlens_q[-1] - 1)
                sampled_rows.append(row)
        max_blocks = max(len(r.block_table) for r in batch.requests)
        block_tables = [r.block_table + [0] * (max_blocks - len(r.block_table)) for r in batch.requests]
        as_tensor = lambda data, dtype: torch.tensor(data, dtype=dtype, device=self.device)  # noqa: E731
        metadata = AttentionMetadata(
            slot_mapping=as_tensor(slot_mapping, torch.int64),
            block_tables=as_tensor(block_tables, torch.int32),
            context_lens=as_tensor(context_lens, torch.int32),
            cu_seqlens_q=as_tensor(cu_seqlens_q, torch.int32),
            max_query_len=max(batch.num_scheduled_tokens),
            kv_caches=self.kv_caches,
        )
        return StepInputs(as_tensor(input_ids, torch.int64), as_tensor(positions, torch.int64), metadata,
                          as_tensor(logits_indices, torch.int64), sampled_rows)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> tuple[torch.Tensor, list[int]]:
        """Float32 logits for the rows of `batch` that reach their last token, and those rows."""
        inputs = self.prepare(batch)
        self.num_forward_tokens += int(inputs.input_ids.numel())
        with forward_context(inputs.metadata):
            hidden = self.model(inputs.input_ids, inputs.positions)
        if not inputs.sampled_rows:
            return hidden.new_empty((0, self.config.vocab_size), dtype=torch.float32), []
        return self.model.compute_logits(hidden[inputs.logits_indices]), inputs.sampled_rows
