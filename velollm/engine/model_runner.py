"""Model runner: owns the model and the paged KV cache; turns a ScheduledBatch into logits."""

from __future__ import annotations

import logging

import torch

from velollm import kernels
from velollm.config import CacheConfig, KernelSwitches, ModelConfig
from velollm.engine.cuda_graph import DecodeGraphs, DecodeStep, batch_buckets
from velollm.engine.forward_context import AttentionMetadata, forward_context
from velollm.engine.loader.load_stop import check_stop
from velollm.engine.loader.progress import track_progress
from velollm.engine.loader.source import TORCH_DTYPES, ModelSource
from velollm.engine.models.layers import RotaryEmbedding
from velollm.engine.models.llama import FUSED_LINEARS
from velollm.engine.models.quantized_linear import QuantizedLinear, quantize_linears, weight_bytes
from velollm.engine.models.registry import model_class
from velollm.engine.placeholders import PendingTokens
from velollm.engine.prefill_path import settle_prefill_path
from velollm.engine.prompt_logprobs import PromptScores, score_prompt
from velollm.engine.scheduler import ScheduledBatch
from velollm.engine.step_inputs import (
    HostStep,
    StepInputs,
    build_host_step,
    graph_scatter,
    step_inputs,
    to_device,
)
from velollm.kernels import int4_cpu, int4_unpack
from velollm.kernels.fp8 import FP8_KV_DTYPE, FP8_MIN_CAPABILITY, fp8_supported
from velollm.kernels.gguf_planes import QuantizedWeight
from velollm.kernels.int4_cpu import Int4Weight

logger = logging.getLogger(__name__)

# Headroom beyond the profiled activations: decode-graph pool, allocator fragmentation.
_GPU_RESERVE = 512 << 20


def _placed(tensor: torch.Tensor | QuantizedWeight, device: torch.device, dtype: torch.dtype):
    """A streamed weight on the device: float tensors in the model dtype, GGUF planes as they are."""
    return tensor.to(device) if isinstance(tensor, (QuantizedWeight, Int4Weight)) else tensor.to(device, dtype)


class ModelRunner:
    def __init__(self, source: ModelSource, device: torch.device, cache_config: CacheConfig,
                 max_num_seqs: int, max_model_len: int, *, profile_tokens: int, enforce_eager: bool = False,
                 switches: KernelSwitches = KernelSwitches()) -> None:
        """`profile_tokens`: the most tokens one step runs (the activations sized before the KV cache);
        `switches`: the kernel choices (prefill_attention settled to varlen or paged here, before any forward)."""
        self.config: ModelConfig = source.config
        self.device = device
        self.dtype = TORCH_DTYPES[self.config.dtype]
        self.block_size = cache_config.block_size
        self.max_num_seqs = max_num_seqs
        self.kv_dtype = kv_cache_dtype(cache_config.kv_cache_dtype, self.dtype, device)
        self.model = self._load_model(source)
        check_stop()  # a load asked to stop (a prefetch a request needs the turn of) allocates no KV cache
        self.switches = settle_prefill_path(switches, self.config, self.dtype, device)
        self.num_blocks = self._num_kv_blocks(cache_config, max_num_seqs, max_model_len, profile_tokens)
        self.kv_caches = self._allocate_kv_cache(self.num_blocks)
        self.attention_backend = kernels.kernel_backend(self.kv_caches[0][0])
        if device.type == "cuda" and self.attention_backend == "triton":
            self._warm_up_kernels()
        self.graphs: DecodeGraphs | None = None
        self._graph_len = 0  # decode graphs' context length; 0: eager decode
        check_stop()
        if device.type == "cuda" and not enforce_eager and self.attention_backend == "triton":
            self._graph_len = min(max_model_len, self.num_blocks * self.block_size)
            self.graphs = self._capture_graphs(self._graph_len)
        self.num_forward_tokens = 0  # tokens actually run through the model (prefix-cache tests read it)
        self.step_counts = {"prefill": 0, "decode_eager": 0, "decode_graph": 0}

    def _load_model(self, source: ModelSource) -> torch.nn.Module:
        model = load_model(source, self.config, self.device, self.dtype)
        self.quantization = source.quantization
        self.weight_bytes = weight_bytes(model)
        return model

    def kv_cache_bytes(self) -> int:
        return self.num_blocks * self.kv_bytes_per_block()

    def kv_bytes_per_block(self) -> int:
        cfg = self.config
        return 2 * cfg.num_hidden_layers * self.block_size * cfg.num_key_value_heads * cfg.head_dim * self.kv_dtype.itemsize

    def _num_kv_blocks(self, cache_config: CacheConfig, max_num_seqs: int, max_model_len: int,
                       profile_tokens: int) -> int:
        if cache_config.kv_cache_memory is not None:
            budget = cache_config.kv_cache_memory
        elif self.device.type == "cuda":
            budget = self._gpu_kv_budget(cache_config.gpu_memory_utilization, profile_tokens)
        else:
            budget = CacheConfig.DEFAULT_CPU_KV_BYTES
        # Never more than every sequence at full length could use: torch.empty on CPU is lazy anyway.
        useful = max_num_seqs * -(-max_model_len // self.block_size) + 1
        num_blocks = min(budget // self.kv_bytes_per_block(), useful)
        if num_blocks < 2:
            raise ValueError(f"KV cache budget of {budget} bytes holds fewer than 2 blocks of "
                             f"{self.kv_bytes_per_block()} bytes; raise kv_cache_memory or gpu_memory_utilization")
        return int(num_blocks)

    def _gpu_kv_budget(self, utilization: float, profile_tokens: int) -> int:
        """utilization x total memory, less what is in use now (weights, CUDA context, other processes),
        the peak activations of a full-size step, and a reserve."""
        activations = self._profile_activation_bytes(profile_tokens)
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        budget = int(total * utilization) - (total - free) - activations - _GPU_RESERVE
        logger.info("GPU memory: %.2f GiB total, %.2f GiB in use, %.2f GiB peak activations (%d tokens) -> "
                    "%.2f GiB for the KV cache", total / 2**30, (total - free) / 2**30, activations / 2**30,
                    profile_tokens, budget / 2**30)
        return budget

    @torch.inference_mode()
    def _profile_activation_bytes(self, num_tokens: int) -> int:
        """Peak memory of one prefill of `num_tokens` tokens plus logits and sampling for the largest batch."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        logits = self.dry_forward(num_tokens)
        # The sampler's heaviest path (top-k/top-p) sorts and softmaxes float32 [rows, vocab].
        probs = torch.softmax(logits, dim=-1)
        sorted_logits = logits.sort(dim=-1, descending=True)
        del probs, sorted_logits, logits
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - base

    @torch.inference_mode()
    def dry_forward(self, num_tokens: int, *, no_cached_prefix: bool = True) -> torch.Tensor:
        """One sequence of `num_tokens` through the model without a KV cache: writes are skipped (slot -1)
        and every position reads one zeroed block. Logits of the last min(max_num_seqs, num_tokens) rows.
        `no_cached_prefix=False` sends the prefill through the paged kernel as a step with a prefix would."""
        cfg = self.config
        block = torch.zeros(1, self.block_size, cfg.num_key_value_heads, cfg.head_dim, dtype=self.kv_dtype,
                            device=self.device)
        make = lambda data, dtype: torch.tensor(data, dtype=dtype, device=self.device)
        metadata = AttentionMetadata(
            slot_mapping=torch.full((num_tokens,), -1, dtype=torch.int64, device=self.device),
            block_tables=torch.zeros(1, -(-num_tokens // self.block_size), dtype=torch.int32, device=self.device),
            context_lens=make([num_tokens], torch.int32),
            cu_seqlens_q=make([0, num_tokens], torch.int32),
            max_query_len=num_tokens,
            kv_caches=[(block, block)] * cfg.num_hidden_layers,
            no_cached_prefix=no_cached_prefix,
        )
        input_ids = torch.zeros(num_tokens, dtype=torch.int64, device=self.device)
        positions = torch.arange(num_tokens, device=self.device) % cfg.max_position_embeddings
        with forward_context(metadata, self.switches):
            hidden = self.model(input_ids, positions)
        return self.model.compute_logits(hidden[-min(self.max_num_seqs, num_tokens):])

    def _warm_up_kernels(self) -> None:
        """Compile the Triton variants a first request could otherwise wait for (hundreds of ms each):
        the paged prefill kernel's tile height follows the longest query (16 to 128 rows; steps with a
        cached prefix run it whatever switches.prefill_attention says), an eager decode step, and the
        prefill path of steps without a prefix."""
        for num_tokens in (1, 16, 32, 64, 128):
            self.dry_forward(num_tokens, no_cached_prefix=False)
        self.dry_forward(16)
        torch.cuda.synchronize(self.device)

    def _allocate_kv_cache(self, num_blocks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        shape = (cfg.num_hidden_layers, 2, num_blocks, self.block_size, cfg.num_key_value_heads, cfg.head_dim)
        cache = torch.empty(shape, dtype=self.kv_dtype, device=self.device)
        logger.info("KV cache: %d blocks of %d tokens, %s (%.1f MiB)", num_blocks, self.block_size,
                    str(self.kv_dtype).removeprefix("torch."), cache.numel() * cache.element_size() / 2**20)
        return [(cache[i, 0], cache[i, 1]) for i in range(cfg.num_hidden_layers)]

    @torch.inference_mode()
    def _capture_graphs(self, max_model_len: int) -> DecodeGraphs:
        graphs = DecodeGraphs(self.model, self.kv_caches, batch_buckets(self.max_num_seqs),
                              -(-max_model_len // self.block_size), self.config.hidden_size, self.dtype, self.device,
                              self.switches)
        graphs.capture()
        return graphs

    def release(self) -> None:
        self.graphs = None  # the graphs hold the KV cache's addresses
        self.kv_caches = []

    def reacquire(self) -> None:
        """The KV cache (and decode graphs) again after `release`, the weights as they are."""
        if self.kv_caches:
            return
        self.kv_caches = self._allocate_kv_cache(self.num_blocks)
        if self._graph_len:
            self.graphs = self._capture_graphs(self._graph_len)

    def paths(self) -> dict[str, object]:
        """Which compute paths ran so far (benchmarks print and check this)."""
        blas = "cuBLAS" if self.device.type == "cuda" else "CPU BLAS"
        matmul = f"torch.nn.functional.linear ({blas})"
        if self.quantization == "int4":
            scratch = next((m.scratch for m in self.model.modules() if isinstance(m, QuantizedLinear)), None)
            prefill = (f"dequantized to {str(self.dtype).removeprefix('torch.')} + {blas} from "
                       f"{int4_cpu.prefill_rows(self.dtype)} rows" if scratch is not None and int4_unpack.supported()
                       else "at every size")
            matmul = (f"CPU int4 (torch _weight_int4pack_mm_for_cpu; {prefill}) for Q4_0/Q4_1/Q4_K, "
                      + matmul + " for the rest")
        if self.quantization == "gguf":
            matmul = "GGUF quantized " + ("(Triton GEMV/GEMM)" if self.attention_backend == "triton"
                                          else "(torch reference: dequantize per call)")
        return {
            "attention": f"paged/{self.attention_backend}",
            "kv_cache_dtype": str(self.kv_dtype).removeprefix("torch."),
            "prefill_no_prefix": self.switches.prefill_attention,  # with a cached prefix: paged
            "norm_rope_act": self.attention_backend,
            "matmul": matmul,
            "weight_bytes": self.weight_bytes,
            "cuda_graphs": self.graphs is not None,
            "graph_buckets": self.graphs.buckets if self.graphs is not None else [],
            "graph_replays": self.graphs.num_replays if self.graphs is not None else 0,
            "steps": dict(self.step_counts),
        }

    def host_step(self, batch: ScheduledBatch, pending: PendingTokens | None = None) -> HostStep:
        """`pending`: the ids the previous step sampled, for rows whose last token is a placeholder."""
        return build_host_step(batch, self.block_size, pending)

    def prepare(self, batch: ScheduledBatch, pending: PendingTokens | None = None) -> StepInputs:
        """The step's inputs on the device, for running the model outside `run` (tests do)."""
        return step_inputs(self.host_step(batch, pending), self.kv_caches, self.device, pending)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch, pending: PendingTokens | None = None,
            ) -> tuple[torch.Tensor, list[int], list[PromptScores]]:
        """Float32 logits for the rows of `batch` that reach their last token, those rows, and the prompt
        logprobs of the rows that asked for them (prompt_logprobs.py).

        No host sync, unless prompt logprobs are scored: inputs go up asynchronously and nothing is read back
        (the sampler reads the result). `pending` holds the ids of rows whose input is a placeholder (async
        scheduling).
        """
        step = self.host_step(batch, pending)
        self.num_forward_tokens += len(step.input_ids)
        graphs = self.graphs
        # A one-token prompt chunk that is scored needs its hidden state, which a decode graph does not return.
        decode_only = step.max_query_len == 1 and not step.prompt_slices
        scores: list[PromptScores] = []
        if graphs is not None and decode_only and graphs.can_run(len(step.input_ids), len(step.block_tables[0])):
            hidden = self._run_graph(graphs, step, pending)
        else:
            hidden, scores = self._run_eager(step, batch, pending)
        if not step.sampled_rows:
            return hidden.new_empty((0, self.config.vocab_size), dtype=torch.float32), [], scores
        return self.model.compute_logits(hidden), step.sampled_rows, scores

    def _run_eager(self, step: HostStep, batch: ScheduledBatch,
                   pending: PendingTokens | None) -> tuple[torch.Tensor, list[PromptScores]]:
        """Hidden states of the sampled rows, and the scored prompt slices."""
        inputs = step_inputs(step, self.kv_caches, self.device, pending)
        self.step_counts["decode_eager" if step.max_query_len == 1 else "prefill"] += 1
        with forward_context(inputs.metadata, self.switches):
            hidden = self.model(inputs.input_ids, inputs.positions)
        scores = []
        if step.prompt_slices:
            ks = [batch.requests[piece.row].params.prompt_logprobs for piece in step.prompt_slices]
            # Blocks of max_num_seqs rows: the start-up profile reserved logits, softmax and sort of that many.
            scores = score_prompt(hidden, step.prompt_slices, ks, self.model.compute_logits, self.max_num_seqs)
        return hidden[inputs.logits_indices], scores

    def _run_graph(self, graphs: DecodeGraphs, step: HostStep, pending: PendingTokens | None) -> torch.Tensor:
        """Hidden states of the sampled rows, from the replayed graph's static output."""
        decode = DecodeStep(step.input_ids, step.positions, step.slot_mapping, step.context_lens, step.block_tables)
        hidden = graphs.run(decode, graph_scatter(step, pending, self.device))
        self.step_counts["decode_graph"] += 1
        if len(step.sampled_rows) == decode.num_seqs:  # one token per row: row i is token i
            return hidden
        (rows,) = to_device([step.sampled_rows], torch.int64, self.device)
        return hidden[rows]


def kv_cache_dtype(requested: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The KV cache's torch dtype: the model's for "auto"; float8 e4m3 for "fp8" where the kernels can
    convert it. GPUs below compute capability 8.9 cannot (Triton has no e4m3 there): they keep the model
    dtype with a warning rather than fail, since the KV dtype trades memory, not what the model computes,
    and OLLAMA_KV_CACHE_TYPE=q8_0 may be set for Ollama on a machine that also runs VeloLLM."""
    if requested == "auto":
        return model_dtype
    if not fp8_supported(device):
        logger.warning("--kv-cache-dtype fp8 needs compute capability %d.%d or newer (Ada, Hopper); %s has %d.%d: "
                       "the KV cache stays %s", *FP8_MIN_CAPABILITY, torch.cuda.get_device_name(device),
                       *torch.cuda.get_device_capability(device), str(model_dtype).removeprefix("torch."))
        return model_dtype
    return FP8_KV_DTYPE


def load_model(source: ModelSource, config: ModelConfig, device: torch.device | str,
               dtype: torch.dtype) -> torch.nn.Module:
    """The model of `source` (shaped by `config`) on `device`, its weights streamed in.

    Built on the meta device so the weights are materialised once, straight from the checkpoint stream;
    quantized layers replace the dense ones before anything is allocated.
    """
    device = torch.device(device)
    with torch.device("meta"):
        model = model_class(config)(config)
        if source.quantization in ("gguf", "int4"):
            quantize_linears(model, dtype, FUSED_LINEARS)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.tie_weights()
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.cos_sin_cache = kernels.build_cos_sin_cache(
                config.head_dim, config.max_position_embeddings, config.rope_theta, config.rope_scaling
            ).to(device)
    model.load_weights(track_progress(
        ((name, _placed(tensor, device, dtype)) for name, tensor in source.iter_weights()),
        source.info.name, source.info.parameter_count))
    return model.eval()
