//! Load options: which device runs the model, how many CPU threads, and whether slow-kernel
//! quantizations are re-quantized at load.

use super::error::{ModelError, Result};
use candle_core::Device;
use std::str::FromStr;
use std::sync::OnceLock;

/// `--device auto|cpu|cuda[:N]|metal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA if built in and present, else Metal likewise, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" => DeviceChoice::Cuda(0),
            "metal" => DeviceChoice::Metal,
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => DeviceChoice::Cuda(n),
                None => {
                    return Err(ModelError::InvalidParams(format!(
                        "unknown device `{s}`: use auto, cpu, cuda, cuda:N or metal"
                    )));
                }
            },
        })
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal => f.write_str("metal"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `auto` takes CUDA device 0 when the binary was built with `cuda` and
    /// a GPU answers, else Metal likewise, else the CPU, and logs what it picked and why; an
    /// explicit `cuda`/`metal` that cannot be opened is an error that says what to check.
    pub fn device(self) -> Result<Device> {
        let device = match self {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Auto => auto_device(),
            DeviceChoice::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(ModelError::DeviceUnavailable(format!("cuda:{n}")));
                }
                Device::new_cuda(n)
                    .map_err(|e| ModelError::DeviceFailed { device: format!("cuda:{n}"), reason: first_line(&e) })?
            }
            DeviceChoice::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(ModelError::DeviceUnavailable("metal".into()));
                }
                Device::new_metal(0)
                    .map_err(|e| ModelError::DeviceFailed { device: "metal".into(), reason: first_line(&e) })?
            }
        };
        tracing::info!(requested = %self, device = %device_label(&device), "device");
        Ok(device)
    }
}

/// candle appends a backtrace to some errors; the message is its first line.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().trim().to_string()
}

fn auto_device() -> Device {
    if candle_core::utils::cuda_is_available() {
        match Device::new_cuda(0) {
            Ok(device) => return device,
            Err(e) => tracing::info!("--device auto: built with CUDA but no GPU could be opened ({e}); using the CPU"),
        }
    }
    if candle_core::utils::metal_is_available() {
        match Device::new_metal(0) {
            Ok(device) => return device,
            Err(e) => tracing::info!("--device auto: built with Metal but no GPU could be opened ({e}); using the CPU"),
        }
    }
    Device::Cpu
}

/// A short name for a device, for logs and the status line: `cpu`, `cuda:0 (NVIDIA H100 80GB
/// HBM3)`, `metal`.
pub fn device_label(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => {
            let ordinal = match device.location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
                _ => 0,
            };
            match gpu_name(device) {
                Some(name) => format!("cuda:{ordinal} ({name})"),
                None => format!("cuda:{ordinal}"),
            }
        }
        Device::Metal(_) => "metal".into(),
    }
}

#[cfg(feature = "cuda")]
fn gpu_name(device: &Device) -> Option<String> {
    let cuda = device.as_cuda_device().ok()?;
    cuda.cuda_stream().context().name().ok()
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_device: &Device) -> Option<String> {
    None
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: DeviceChoice,
    /// CPU threads for candle; `None` = `default_threads()`. Only the first load in a process
    /// can set it: candle sizes its thread pools once.
    pub threads: Option<usize>,
    /// Re-quantize Q5_0/Q5_1 weights to Q8_0 on CPU (candle has SIMD kernels only for Q8_0,
    /// Q4_0 and the K-quants; Q8_0 keeps SmolLM2's greedy text, Q4_0 changed it). Q4_1 runs as
    /// stored on CPUs with AVX2 (`model::q8_cpu`), and is re-quantized elsewhere.
    pub requantize: bool,
    /// Dequantize every GGUF matrix to dense f32 (slow; for exact comparisons with reference
    /// implementations that dequantize, and for training). Takes precedence over `requantize`.
    pub dequantize: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { device: DeviceChoice::Auto, threads: None, requantize: true, dequantize: false }
    }
}

/// Default CPU threads: one fewer than the cores, at least one. candle's matmul pool spins
/// while waiting, so when every core is taken and another process (the TUI, a training run, a
/// build) competes, throughput collapses (measured: 2 threads 1.5 tok/s vs 1 thread 7.5 tok/s
/// on 2 busy cores); leaving a core free costs little on a quiet machine.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    cores.saturating_sub(1).max(1)
}

static THREADS: OnceLock<usize> = OnceLock::new();

/// Sets candle's CPU thread count once per process, before its pools start, and returns the
/// count in force (a later, different request cannot change it and is ignored).
pub fn configure_threads(requested: Option<usize>) -> usize {
    *THREADS.get_or_init(|| {
        let n = requested.filter(|n| *n > 0).unwrap_or_else(default_threads);
        let explicit = std::env::var("CANDLE_NUM_THREADS").is_ok() && requested.is_none();
        if explicit {
            // rayon's own default (RAYON_NUM_THREADS, else the CPUs) as before.
            start_global_pool(0);
            return std::env::var("CANDLE_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
        }
        // SAFETY: candle and rayon read these variables when they build their pools, which
        // has not happened yet (this runs once, before the first model is loaded). Setting the
        // environment is only unsound if another thread reads it concurrently; verdict loads
        // models before starting its worker threads, and the TUI loads on one worker thread.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
                std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", BARRIER_POOL_SPIN_LIMIT.to_string());
            }
        }
        start_global_pool(n);
        n
    })
}

/// Starts rayon's global pool (gemm's matrix products run on it) with `n` workers (0: rayon's
/// default) that flush denormals as the process chose (`model::denormals`), and puts the calling
/// thread in that mode. The pool is started here rather than on first use so that its workers get
/// the mode whichever thread first multiplies; candle's own pools are created later by the
/// computing thread and inherit its mode. If the pool already runs (a program embedding verdict
/// built it), it is kept.
fn start_global_pool(n: usize) {
    super::denormals::apply();
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).start_handler(|_| super::denormals::apply()).build_global();
}

/// Spins of an idle worker of candle's element-wise pool before it sleeps (candle's default is
/// 25,000, about half a millisecond here). Between two element-wise ops a training step runs
/// matrix products on rayon's threads; a pool worker still spinning holds a core they need,
/// and the caller spins in turn while the worker waits for a core (measured, LoRA step with 2
/// threads beside one other busy process: 5.2 s with candle's default, 2.6 s with 50, 2.4 s
/// with 1 thread). Decoding one token uses no pool (its vectors are below candle's threshold).
const BARRIER_POOL_SPIN_LIMIT: u32 = 50;
