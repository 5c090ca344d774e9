//! Step cost models and model/GPU presets (DESIGN §7).
//!
//! A step's duration is a function of its [`StepShape`] (tokens, sequences, KV read):
//!
//! ```text
//! roofline: step = overhead + max(flops / (peak_flops * eff_c), bytes / (mem_bw * eff_m))
//!                 + swap_blocks * block_size * kv_bytes_per_token / host_bw
//!   flops = 2 * params * new_tokens                                  (the matmuls)
//!         + 4 * layers * q_dim * sum_i n_i * (c_i + (n_i + 1) / 2)   (QK^T and AV, causal)
//!   bytes = weight_bytes + kv_bytes_per_token * sum_i (c_i + n_i)    (KV read + written)
//!   (n_i new tokens of request i on top of c_i cached ones; tensor parallelism divides the
//!    work over `tp` GPUs, so peak_flops, mem_bw are the sums over the group)
//! linear:   step = c0 + c1 * prefill_tokens + c2 * decode_seqs + c3 * kv_tokens
//!                 + swap_s_per_block * swap_blocks
//! ```
//!
//! The presets hold no state; a [`CostModel`] is plain data, cheap to copy.

use crate::error::{Error, Result};

/// What a step's duration depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepShape {
    /// New tokens of requests in prefill (their first token or a recompute).
    pub prefill_tokens: u64,
    /// Requests decoding one token.
    pub decode_seqs: u64,
    /// All new tokens (prefill + decode).
    pub new_tokens: u64,
    /// KV tokens attended over: sum of (cached + new) tokens per request.
    pub kv_tokens: u64,
    /// Causal attention pairs: sum of n * (c + (n + 1) / 2).
    pub attn_pairs: f64,
    /// Blocks copied between GPU and CPU (swap out + swap in).
    pub swap_blocks: u64,
}

impl StepShape {
    /// Add one scheduled request: `n` new tokens on top of `c` cached, prefill or decode.
    #[inline]
    pub fn add(&mut self, n: u64, c: u64, is_prefill: bool) {
        if is_prefill {
            self.prefill_tokens += n;
        } else {
            self.decode_seqs += 1;
        }
        self.new_tokens += n;
        self.kv_tokens += c + n;
        self.attn_pairs += n as f64 * (c as f64 + (n as f64 + 1.0) * 0.5);
    }
}

/// A transformer's shape (from its Hugging Face `config.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSpec {
    pub name: &'static str,
    pub num_layers: u64,
    pub hidden_size: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    /// Total parameters (embeddings included).
    pub params: f64,
    /// Bytes per weight and per KV element (bf16 = 2).
    pub dtype_bytes: u64,
}

impl ModelSpec {
    /// KV bytes per token, whole model: 2 (K and V) * layers * kv_heads * head_dim * dtype.
    pub fn kv_bytes_per_token(&self) -> f64 {
        (2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes) as f64
    }
    pub fn weight_bytes(&self) -> f64 {
        self.params * self.dtype_bytes as f64
    }
}

/// One GPU (from its vendor datasheet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    /// Dense bf16 tensor-core peak, FLOP/s (not the 2:4-sparsity number).
    pub peak_flops: f64,
    /// HBM bandwidth, bytes/s.
    pub mem_bw: f64,
    /// HBM capacity, bytes.
    pub memory_bytes: f64,
    /// Host <-> GPU bandwidth for swapping, bytes/s (PCIe, effective).
    pub host_bw: f64,
}

// Model configs: the `config.json` of each Hugging Face repository.
// - meta-llama/Meta-Llama-3-8B: 32 layers, hidden 4096, 32 heads, 8 KV heads (GQA),
//   head_dim 128; 8.03e9 parameters (model card).
// - meta-llama/Llama-2-7b-hf: 32 layers, hidden 4096, 32 heads, 32 KV heads (MHA),
//   head_dim 128; 6.74e9 parameters (model card / Llama 2 paper, Table 1).
// - meta-llama/Meta-Llama-3-70B: 80 layers, hidden 8192, 64 heads, 8 KV heads, head_dim 128;
//   70.6e9 parameters (model card).
pub(crate) const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "llama-3-8b",
        num_layers: 32,
        hidden_size: 4096,
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
        params: 8.03e9,
        dtype_bytes: 2,
    },
    ModelSpec {
        name: "llama-2-7b",
        num_layers: 32,
        hidden_size: 4096,
        num_heads: 32,
        num_kv_heads: 32,
        head_dim: 128,
        params: 6.74e9,
        dtype_bytes: 2,
    },
    ModelSpec {
        name: "llama-3-70b",
        num_layers: 80,
        hidden_size: 8192,
        num_heads: 64,
        num_kv_heads: 8,
        head_dim: 128,
        params: 70.6e9,
        dtype_bytes: 2,
    },
];

// GPUs: NVIDIA datasheets.
// - H100 SXM5 80GB: 989 TFLOPS dense BF16 (1,979 is with sparsity), 3.35 TB/s HBM3, 80 GB;
//   host link PCIe Gen5 x16 (64 GB/s theoretical), modelled as 25 GB/s effective for
//   pinned-memory block copies as vLLM's swap does them.
// - A100 SXM4 80GB: 312 TFLOPS dense BF16 (624 with sparsity), 2.039 TB/s HBM2e, 80 GB;
//   PCIe Gen4 x16 (32 GB/s theoretical), ~25 GB/s effective.
pub(crate) const GPUS: &[GpuSpec] = &[
    GpuSpec {
        name: "h100",
        peak_flops: 989e12,
        mem_bw: 3.35e12,
        memory_bytes: 80e9,
        host_bw: 25e9,
    },
    GpuSpec {
        name: "a100",
        peak_flops: 312e12,
        mem_bw: 2.039e12,
        memory_bytes: 80e9,
        host_bw: 25e9,
    },
];

/// Named (model, GPU, tensor-parallel degree) pairs; `model/gpu` or `model/Ngpu` (N > 1: TP).
pub(crate) const PRESETS: &[(&str, &str, &str, u64)] = &[
    ("llama-3-8b/h100", "llama-3-8b", "h100", 1),
    ("llama-3-8b/a100", "llama-3-8b", "a100", 1),
    ("llama-2-7b/a100", "llama-2-7b", "a100", 1),
    ("llama-2-7b/h100", "llama-2-7b", "h100", 1),
    ("llama-3-70b/4xh100", "llama-3-70b", "h100", 4),
    ("llama-3-70b/4xa100", "llama-3-70b", "a100", 4),
];

/// Names of every preset, in registry order.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).collect()
}

/// Efficiencies and memory policy shared by the presets.
///
/// - `eff_compute = 0.6`: large bf16 GEMMs reach 60-75% of dense peak on H100/A100 (cuBLAS
///   benchmarks; prefill MFU of 50-60% is typical in vLLM/TensorRT-LLM reports); we take the
///   low end since prefill batches mix shapes.
/// - `eff_memory = 0.8`: decode kernels read weights and KV at ~80% of HBM peak (the
///   "model bandwidth utilization" of Databricks' *LLM inference performance engineering*,
///   2023, is 60-80% at batch 1-16).
/// - `overhead_s = 4 ms` (plus 2 ms with tensor parallelism for all-reduces): vLLM's
///   per-step CPU work (scheduling, batch preparation, sampling) is a few milliseconds.
/// - `gpu_memory_utilization = 0.9` (vLLM's default), minus `activation_bytes = 2 GB` per
///   GPU reserved for activations, CUDA graphs and the allocator.
/// - `swap_space = 4 GB` per GPU of pinned host memory (vLLM's default `swap_space`).
pub(crate) const EFF_COMPUTE: f64 = 0.6;
pub(crate) const EFF_MEMORY: f64 = 0.8;
pub(crate) const OVERHEAD_S: f64 = 0.004;
pub(crate) const TP_OVERHEAD_S: f64 = 0.002;
pub(crate) const GPU_MEMORY_UTILIZATION: f64 = 0.9;
pub(crate) const ACTIVATION_BYTES: f64 = 2e9;
pub(crate) const SWAP_SPACE_BYTES: f64 = 4e9;

/// A model on a GPU group, with what the simulator needs from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub model: ModelSpec,
    pub gpu: GpuSpec,
    pub tp: u64,
}

impl Preset {
    /// Look a preset up by `model/gpu` name (`llama-3-8b/h100`).
    pub fn by_name(name: &str) -> Result<Preset> {
        let found = PRESETS.iter().find(|p| p.0 == name);
        let Some(&(pname, model, gpu, tp)) = found else {
            return Err(Error::UnknownName {
                field: "preset",
                name: name.to_string(),
                valid: preset_names(),
            });
        };
        let model = MODELS.iter().find(|m| m.name == model).copied();
        let gpu = GPUS.iter().find(|g| g.name == gpu).copied();
        match (model, gpu) {
            (Some(model), Some(gpu)) => Ok(Preset {
                name: pname,
                model,
                gpu,
                tp,
            }),
            _ => Err(Error::Invariant {
                message: format!("preset {pname} names a model or GPU missing from the tables"),
            }),
        }
    }

    /// KV cache bytes per GPU group: `tp * (memory * 0.9 - activations) - weights`.
    pub fn kv_cache_bytes(&self) -> f64 {
        let tp = self.tp as f64;
        tp * (self.gpu.memory_bytes * GPU_MEMORY_UTILIZATION - ACTIVATION_BYTES)
            - self.model.weight_bytes()
    }

    /// GPU KV blocks of `block_size` tokens that fit (0 if the weights do not fit).
    pub fn num_gpu_blocks(&self, block_size: u64) -> u64 {
        let per_block = self.model.kv_bytes_per_token() * block_size.max(1) as f64;
        (self.kv_cache_bytes() / per_block).max(0.0).floor() as u64
    }

    /// CPU swap blocks of `block_size` tokens in `swap_space` bytes per GPU.
    pub fn num_cpu_blocks(&self, block_size: u64) -> u64 {
        let per_block = self.model.kv_bytes_per_token() * block_size.max(1) as f64;
        (SWAP_SPACE_BYTES * self.tp as f64 / per_block).floor() as u64
    }

    pub fn roofline(&self, block_size: u64) -> Roofline {
        let tp = self.tp as f64;
        Roofline {
            overhead_s: OVERHEAD_S + if self.tp > 1 { TP_OVERHEAD_S } else { 0.0 },
            params: self.model.params,
            num_layers: self.model.num_layers as f64,
            q_dim: (self.model.num_heads * self.model.head_dim) as f64,
            weight_bytes: self.model.weight_bytes(),
            kv_bytes_per_token: self.model.kv_bytes_per_token(),
            peak_flops: self.gpu.peak_flops * tp,
            mem_bw: self.gpu.mem_bw * tp,
            eff_compute: EFF_COMPUTE,
            eff_memory: EFF_MEMORY,
            host_bw: self.gpu.host_bw * tp,
            block_size: block_size as f64,
        }
    }
}

/// The roofline model's parameters (sums over the tensor-parallel group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roofline {
    pub overhead_s: f64,
    pub params: f64,
    pub num_layers: f64,
    pub q_dim: f64,
    pub weight_bytes: f64,
    pub kv_bytes_per_token: f64,
    pub peak_flops: f64,
    pub mem_bw: f64,
    pub eff_compute: f64,
    pub eff_memory: f64,
    pub host_bw: f64,
    pub block_size: f64,
}

/// A fitted linear model (e.g. from the torch engine's measured steps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    pub c0: f64,
    pub c1: f64,
    pub c2: f64,
    pub c3: f64,
    pub swap_s_per_block: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CostModel {
    Roofline(Roofline),
    Linear(Linear),
}

/// The bound a cost parameter must meet besides being finite.
#[derive(Clone, Copy)]
enum Bound {
    NonNegative,
    Positive,
}

/// Check `(field, value, bound)` in order; the first one out of bounds is the error.
fn check_bounds(params: &[(&'static str, f64, Bound)]) -> Result<()> {
    for &(field, v, bound) in params {
        let (ok, text) = match bound {
            Bound::NonNegative => (v >= 0.0, ">= 0"),
            Bound::Positive => (v > 0.0, "> 0"),
        };
        if !(v.is_finite() && ok) {
            return Err(Error::Config {
                field,
                value: None,
                message: format!("{field} must be finite and {text}, got {v}"),
            });
        }
    }
    Ok(())
}

impl CostModel {
    pub fn validate(&self) -> Result<()> {
        use Bound::{NonNegative, Positive};
        match self {
            CostModel::Roofline(r) => {
                check_bounds(&[
                    ("overhead_s", r.overhead_s, NonNegative),
                    ("params", r.params, NonNegative),
                    ("num_layers", r.num_layers, NonNegative),
                    ("q_dim", r.q_dim, NonNegative),
                    ("weight_bytes", r.weight_bytes, NonNegative),
                    ("kv_bytes_per_token", r.kv_bytes_per_token, NonNegative),
                    ("peak_flops", r.peak_flops, Positive),
                    ("mem_bw", r.mem_bw, Positive),
                    ("eff_compute", r.eff_compute, Positive),
                    ("eff_memory", r.eff_memory, Positive),
                    ("host_bw", r.host_bw, Positive),
                    ("block_size", r.block_size, Positive),
                ])?;
                if r.eff_compute > 1.0 || r.eff_memory > 1.0 {
                    return Err(Error::Config {
                        field: "eff_compute",
                        value: None,
                        message: "eff_compute and eff_memory must be in (0, 1]".into(),
                    });
                }
                if r.overhead_s + r.weight_bytes <= 0.0 {
                    return Err(Error::Config {
                        field: "overhead_s",
                        value: None,
                        message: "a step must cost something: overhead_s or weight_bytes > 0"
                            .into(),
                    });
                }
            }
            // A zero-cost step would let simulated time stand still: c0 > 0.
            CostModel::Linear(l) => check_bounds(&[
                ("c0", l.c0, Positive),
                ("c1", l.c1, NonNegative),
                ("c2", l.c2, NonNegative),
                ("c3", l.c3, NonNegative),
                ("swap_s_per_block", l.swap_s_per_block, NonNegative),
            ])?,
        }
        Ok(())
    }

    /// The model and the coefficients that set a step's minimum time, for error messages.
    pub fn describe(&self) -> String {
        match self {
            CostModel::Roofline(r) => format!(
                "roofline (overhead_s={} s, weight_bytes={}, mem_bw={} B/s, eff_memory={})",
                r.overhead_s, r.weight_bytes, r.mem_bw, r.eff_memory
            ),
            CostModel::Linear(l) => format!(
                "linear (c0={} s, c1={}, c2={}, c3={}, swap_s_per_block={})",
                l.c0, l.c1, l.c2, l.c3, l.swap_s_per_block
            ),
        }
    }

    /// Seconds one step of this shape takes.
    #[inline]
    pub fn step_time(&self, s: &StepShape) -> f64 {
        match self {
            CostModel::Roofline(r) => {
                let flops = 2.0 * r.params * s.new_tokens as f64
                    + 4.0 * r.num_layers * r.q_dim * s.attn_pairs;
                let bytes = r.weight_bytes + r.kv_bytes_per_token * s.kv_tokens as f64;
                let compute = flops / (r.peak_flops * r.eff_compute);
                let memory = bytes / (r.mem_bw * r.eff_memory);
                let swap = s.swap_blocks as f64 * r.block_size * r.kv_bytes_per_token / r.host_bw;
                r.overhead_s + compute.max(memory) + swap
            }
            CostModel::Linear(l) => {
                l.c0 + l.c1 * s.prefill_tokens as f64
                    + l.c2 * s.decode_seqs as f64
                    + l.c3 * s.kv_tokens as f64
                    + l.swap_s_per_block * s.swap_blocks as f64
            }
        }
    }
}

impl Preset {
    /// An engine configuration on this preset's hardware: the `settings` given (checked as
    /// `SchedulerConfig`'s), and where not given, the preset's GPU blocks (and, under swap,
    /// its CPU blocks) for the configured block size. The preset is resolved once per
    /// simulation, here.
    pub fn engine_config<'a>(
        &self,
        settings: impl IntoIterator<Item = (&'a str, crate::error::Value)>,
    ) -> Result<crate::config::SchedulerConfig> {
        use crate::config::{PreemptMode, SchedulerConfig, DEFAULT_BLOCK_SIZE};
        let settings: Vec<_> = settings.into_iter().collect();
        let given = |field: &str| settings.iter().any(|(k, _)| *k == field);
        let mut cfg = SchedulerConfig::new(1, DEFAULT_BLOCK_SIZE);
        for (field, value) in &settings {
            cfg.set(field, value)?;
        }
        if !given("num_gpu_blocks") {
            cfg.num_gpu_blocks = self.num_gpu_blocks(cfg.block_size);
        }
        if !given("num_cpu_blocks") && cfg.preemption_mode == PreemptMode::Swap {
            cfg.num_cpu_blocks = self.num_cpu_blocks(cfg.block_size);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_resolve_and_have_room_for_kv() {
        for name in preset_names() {
            let p = Preset::by_name(name).unwrap();
            assert!(p.num_gpu_blocks(16) > 1000, "{name}");
            CostModel::Roofline(p.roofline(16)).validate().unwrap();
        }
        let err = Preset::by_name("gpt-5/tpu").unwrap_err();
        assert!(err.to_string().contains("llama-3-8b/h100"));
    }

    #[test]
    fn llama3_8b_h100_numbers() {
        let p = Preset::by_name("llama-3-8b/h100").unwrap();
        assert_eq!(p.model.kv_bytes_per_token(), 131072.0); // 128 KiB per token
                                                            // (72 GB - 2 GB - 16.06 GB) / (16 * 128 KiB) = 25,720 blocks
        assert_eq!(p.num_gpu_blocks(16), 25_720);
        let cost = CostModel::Roofline(p.roofline(16));
        // One decode token at small context is memory bound: 4 ms + 16 GB / 2.68 TB/s.
        let mut s = StepShape::default();
        s.add(1, 100, false);
        let t = cost.step_time(&s);
        assert!((t - (0.004 + (16.06e9 + 101.0 * 131072.0) / (3.35e12 * 0.8))).abs() < 1e-12);
        // A 8k-token prefill is compute bound.
        let mut s = StepShape::default();
        s.add(8192, 0, true);
        assert!(cost.step_time(&s) > 0.2);
    }
}
