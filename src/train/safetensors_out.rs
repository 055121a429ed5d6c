//! Writing a safetensors file one tensor at a time: the header from every tensor's name, shape
//! and dtype, then each tensor made, written and dropped in turn. Exporting a model through it
//! holds one f32 tensor beside the model, not a second copy of every weight (a LoRA run over a
//! bf16 or quantized base would otherwise dequantize the whole base at once).

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Result, Tensor};

/// One tensor of the file: `make` produces it (in `dtype`, of `shape`) when its turn comes.
pub struct Entry<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub make: Box<dyn Fn() -> Result<Tensor> + 'a>,
}

fn code(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        other => candle_core::bail!("safetensors writer: {other:?} not supported"),
    })
}

/// Writes `t`'s values little-endian; an f32 tensor on the CPU straight from its storage, a
/// bounded buffer at a time (a 0.5B model's embedding is 544 MB: no copy of it is made).
fn write_values(f: &mut impl Write, t: &Tensor, io: impl Fn(std::io::Error) -> candle_core::Error) -> Result<()> {
    let t = t.contiguous()?;
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        return super::real::with_slice::<f32, _>(&t, "export", |values| -> Result<()> {
            let mut buf = Vec::with_capacity(1 << 18);
            for chunk in values.chunks(1 << 16) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
                f.write_all(&buf).map_err(&io)?;
            }
            Ok(())
        })?;
    }
    f.write_all(&bytes_of(&t)?).map_err(io)
}

fn bytes_of(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F64 => t.to_vec1::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BF16 => t.to_vec1::<half::bf16>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => t.to_vec1::<half::f16>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        other => candle_core::bail!("safetensors writer: {other:?} not supported"),
    })
}

/// Writes `entries` to `path` (in their order), checking each made tensor against its entry.
pub fn write(path: &Path, entries: &[Entry<'_>]) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for e in entries {
        let len = e.shape.iter().product::<usize>() * e.dtype.size_in_bytes();
        header.insert(
            e.name.clone(),
            serde_json::json!({ "dtype": code(e.dtype)?, "shape": e.shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut text = serde_json::to_string(&header).map_err(candle_core::Error::wrap)?.into_bytes();
    // The data starts 8-byte aligned, as the reference writer pads the header with spaces.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let io = |e: std::io::Error| candle_core::Error::Msg(format!("{}: {e}", path.display()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&(text.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&text).map_err(io)?;
    for e in entries {
        let t = (e.make)()?;
        if t.dims() != e.shape.as_slice() || t.dtype() != e.dtype {
            candle_core::bail!(
                "{}: made {:?} {:?}, announced {:?} {:?}",
                e.name,
                t.dims(),
                t.dtype(),
                e.shape,
                e.dtype
            );
        }
        write_values(&mut f, &t, io)?;
    }
    f.flush().map_err(io)
}
