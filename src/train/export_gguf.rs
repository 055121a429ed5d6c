//! Exporting a trained model as a GGUF file that llama.cpp and `verdict generate` load.
//!
//! Only a GGUF base model can be exported this way: its metadata (tokenizer, chat template,
//! hyper-parameters) is copied unchanged, and the trained weights replace its tensors under the
//! same names, shapes and order, in the family's GGUF layout (`gguf_layout`: llama q/k rows
//! permuted back into llama.cpp's interleaved rotary layout, Gemma's norms as `1 + w`, Phi-3's
//! projections fused), the inverse of what `weights::load_gguf` undoes.
//!
//! Weight types: norms and biases (1-D) stay F32, as llama.cpp's own quantizer keeps them. A
//! matrix whose rows are not a whole number of the chosen type's blocks (Q4_K needs 256, and
//! SmolLM2's rows are 576 wide) falls back to Q8_0, else F32: Q8_0 is finer than every type it
//! stands in for, so nothing is lost beyond what the chosen type would lose, and the file stays
//! small (llama.cpp's quantizer makes the same kind of substitution).
//!
//! candle writes GGUF v2 with 32-byte alignment and leaves metadata as given, so this module
//! sets `general.file_type` and `general.quantization_version` itself and drops keys that would
//! describe the source file rather than this one (alignment, split, imatrix).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Error, Result, Tensor};

use super::gguf_layout::{gguf_name, hf_name, to_gguf};
use crate::model::arch::Family;

/// Which weight types the exported matrices get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    /// Every matrix in this type (with the Q8_0/F32 fallback for rows that do not fit its blocks).
    Uniform(GgmlDType),
    /// Each matrix in the type the source file stores it in: the source's own mix, e.g. SmolLM2's
    /// Q4_1 file keeps `token_embd` at Q8_0, and Q4_K_M files mix Q4_K with Q6_K.
    LikeSource,
}

fn msg(s: String) -> Error {
    Error::Msg(s)
}

fn io(e: std::io::Error, what: &Path) -> Error {
    msg(format!("{}: {e}", what.display()))
}

/// llama.cpp's spelling of a type, for file names (`Q4_1`, `Q8_0`, `Q4_K`).
pub fn type_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// llama.cpp's `general.file_type` (enum `llama_ftype`) for a file mostly of type `t`; the
/// K-quants get their "_S" variant, the one that is that type throughout.
pub fn file_type(t: GgmlDType) -> Result<u32> {
    Ok(match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 14,
        GgmlDType::Q5K => 16,
        GgmlDType::Q6K => 18,
        GgmlDType::BF16 => 32,
        GgmlDType::Q8_1 | GgmlDType::Q8K => {
            return Err(msg(format!(
                "{} is an intermediate type llama.cpp does not store models in: export Q8_0, Q4_K or Q6_K instead",
                type_name(t)
            )));
        }
    })
}

fn no_hf_source(source: &Path) -> Error {
    msg(format!(
        "GGUF export needs a GGUF base model, and {} is a Hugging Face directory (it has no GGUF tokenizer \
         metadata to copy). Convert the exported HF model with llama.cpp: \
         `python convert_hf_to_gguf.py <run>/model --outtype q8_0 --outfile model.Q8_0.gguf`, \
         or train from a GGUF base model",
        source.display()
    ))
}

fn read_source(source: &Path) -> Result<(Content, File)> {
    if source.is_dir() {
        return Err(no_hf_source(source));
    }
    let mut f = File::open(source).map_err(|e| io(e, source))?;
    let content = Content::read(&mut f).map_err(|e| e.with_path(source))?;
    Ok((content, f))
}

/// The type most matrix elements of a GGUF are stored in (`Q4_1` for the default model).
pub fn source_quantization(source: &Path) -> Result<GgmlDType> {
    let (content, _) = read_source(source)?;
    dominant_matrix_type(&content)
}

fn dominant_matrix_type(content: &Content) -> Result<GgmlDType> {
    let mut totals: Vec<(GgmlDType, usize)> = Vec::new();
    for info in content.tensor_infos.values().filter(|i| i.shape.rank() >= 2) {
        let n = info.shape.elem_count();
        match totals.iter_mut().find(|(t, _)| *t == info.ggml_dtype) {
            Some((_, total)) => *total += n,
            None => totals.push((info.ggml_dtype, n)),
        }
    }
    // Ties broken by name so the answer does not depend on HashMap order.
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(type_name(a.0).cmp(type_name(b.0))));
    totals.first().map(|(t, _)| *t).ok_or_else(|| msg("the GGUF has no matrices".into()))
}

/// The type one tensor is stored in: F32 for 1-D, else `wanted` when its rows fit its blocks,
/// else Q8_0 when they fit Q8_0's, else F32.
pub fn storage_type(dims: &[usize], wanted: GgmlDType) -> GgmlDType {
    let row = dims.last().copied().unwrap_or(0);
    if dims.len() < 2 {
        GgmlDType::F32
    } else if row.is_multiple_of(wanted.block_size()) {
        wanted
    } else if row.is_multiple_of(GgmlDType::Q8_0.block_size()) {
        GgmlDType::Q8_0
    } else {
        GgmlDType::F32
    }
}

fn meta_usize(content: &Content, key: &str) -> Option<usize> {
    let v = content.metadata.get(key)?;
    v.to_u32().map(|x| x as usize).or_else(|_| v.to_u64().map(|x| x as usize)).ok()
}

/// The trained tensors an export reads, by HF name and in HF layout (`export::hf_tensors`), one
/// at a time: a run's export makes each (a LoRA projection merged, a lean base's dequantized)
/// only when it is written, so the model never exists a second time in f32.
pub trait Trained {
    fn names(&self) -> Vec<String>;
    fn tensor(&self, hf_name: &str) -> Result<Tensor>;
}

impl Trained for Vec<(String, Tensor)> {
    fn names(&self) -> Vec<String> {
        self.iter().map(|(n, _)| n.clone()).collect()
    }

    fn tensor(&self, hf_name: &str) -> Result<Tensor> {
        self.iter()
            .find(|(n, _)| n == hf_name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| msg(format!("no trained tensor {hf_name}")))
    }
}

/// GGUF name -> HF name of every trained tensor.
fn gguf_names(trained: &dyn Trained, family: Family) -> Result<HashMap<String, String>> {
    trained
        .names()
        .into_iter()
        .map(|hf| Ok((gguf_name(family, &hf).ok_or_else(|| msg(format!("tensor {hf} has no GGUF name")))?, hf)))
        .collect()
}

/// The source's metadata with the keys that describe this file set for it.
fn metadata(content: &Content, file_type: u32, quantized: bool) -> Vec<(String, Value)> {
    let stale = |k: &str| {
        k == "general.alignment"
            || k == "general.file_type"
            || k == "general.quantization_version"
            || k.starts_with("split.")
            || k.starts_with("quantize.imatrix.")
    };
    let mut md: Vec<(String, Value)> =
        content.metadata.iter().filter(|(k, _)| !stale(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    md.push(("general.file_type".into(), Value::U32(file_type)));
    if quantized {
        md.push(("general.quantization_version".into(), Value::U32(2)));
    }
    // Architecture first, as llama.cpp writes it; the rest sorted so the output is reproducible.
    md.sort_by(|a, b| (a.0 != "general.architecture").cmp(&(b.0 != "general.architecture")).then(a.0.cmp(&b.0)));
    md
}

/// Writes `tensors` (HF names and layout, as `export::hf_tensors` returns them) as a GGUF file at
/// `out`, with `source_gguf`'s metadata and tensor set. Returns the type each tensor was stored in.
///
/// Source tensors the trainer does not hold (`rope_freqs`) are copied as they are; a trained
/// tensor the source lacks, or a source matrix the trained set lacks, is an error (the weights
/// do not come from this source).
pub fn export_gguf(
    tensors: &dyn Trained,
    source_gguf: &Path,
    quant: GgufQuant,
    out: &Path,
) -> Result<Vec<(String, GgmlDType)>> {
    let (content, mut reader) = read_source(source_gguf)?;
    let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
    let arch = arch.ok_or_else(|| msg(format!("{} lacks general.architecture", source_gguf.display())))?;
    let family = Family::from_gguf(&arch)
        .ok_or_else(|| msg(format!("the source GGUF's architecture `{arch}` is not one verdict exports")))?;
    let n_head = meta_usize(&content, &format!("{arch}.attention.head_count"))
        .ok_or_else(|| msg(format!("the source GGUF lacks {arch}.attention.head_count")))?;
    let n_kv_head = meta_usize(&content, &format!("{arch}.attention.head_count_kv")).unwrap_or(n_head);
    let mut trained = gguf_names(tensors, family)?;
    let (main_type, ftype) = match quant {
        GgufQuant::Uniform(t) => (t, file_type(t)?),
        GgufQuant::LikeSource => {
            let t = dominant_matrix_type(&content)?;
            (t, meta_usize(&content, "general.file_type").map_or_else(|| file_type(t), |v| Ok(v as u32))?)
        }
    };

    // The source's order (by offset), so the file reads like the one it came from.
    let mut names: Vec<(&String, u64)> = content.tensor_infos.iter().map(|(n, i)| (n, i.offset)).collect();
    names.sort_by_key(|(_, offset)| *offset);
    let mut written: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for (name, _) in names {
        let info = &content.tensor_infos[name];
        let Some(hf) = trained.remove(name) else {
            if Family::from_gguf(&arch).is_some_and(|f| hf_name(f, name).is_some()) {
                return Err(msg(format!(
                    "the trained weights lack {name}, which {} has: export from the model that was trained",
                    source_gguf.display()
                )));
            }
            written.push((name.clone(), content.tensor(&mut reader, name, &Device::Cpu)?));
            continue;
        };
        // One tensor at a time: made (merged) now, in GGUF layout, quantized, then dropped.
        let t = tensors.tensor(&hf)?.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let t = to_gguf(family, &arch, (n_head, n_kv_head), name, t)?;
        if t.dims() != info.shape.dims() {
            return Err(msg(format!(
                "trained {name} is {:?} but {} stores it as {:?}: export from the model that was trained",
                t.dims(),
                source_gguf.display(),
                info.shape.dims()
            )));
        }
        let wanted = if quant == GgufQuant::LikeSource { info.ggml_dtype } else { main_type };
        let ty = storage_type(t.dims(), wanted);
        written.push((name.clone(), QTensor::quantize(&t, ty)?));
    }
    if let Some(extra) = trained.keys().min() {
        return Err(msg(format!(
            "trained tensor {extra} has no counterpart in {}: export from the model that was trained",
            source_gguf.display()
        )));
    }

    let quantized =
        written.iter().any(|(_, q)| !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16));
    let md = metadata(&content, ftype, quantized);
    write_atomic(out, &md, &written)?;
    Ok(written.into_iter().map(|(n, q)| (n, q.dtype())).collect())
}

fn write_atomic(out: &Path, md: &[(String, Value)], tensors: &[(String, QTensor)]) -> Result<()> {
    let mut tmp_name = out.file_name().ok_or_else(|| msg(format!("{} is not a file path", out.display())))?.to_owned();
    tmp_name.push(".tmp");
    let tmp = out.with_file_name(tmp_name);
    let result = (|| -> Result<()> {
        let mut w = BufWriter::new(File::create(&tmp).map_err(|e| io(e, &tmp))?);
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &md_refs, &t_refs)
            .map_err(|e| msg(format!("{}: {}", tmp.display(), super::error_text(&e))))?;
        w.flush().map_err(|e| io(e, &tmp))?;
        w.into_inner().map_err(|e| io(e.into_error(), &tmp))?.sync_all().map_err(|e| io(e, &tmp))?;
        std::fs::rename(&tmp, out).map_err(|e| io(e, out))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The GGUF files a finished run leaves in `dir`: `model.Q8_0.gguf`, and when the source is
/// stored in another type, `model.<type>.gguf` in the source's own mix (`model.Q4_1.gguf` for the
/// default model). Returns the paths written.
pub fn export_gguf_files(tensors: &dyn Trained, source_gguf: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let source_type = source_quantization(source_gguf)?;
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let q8 = dir.join("model.Q8_0.gguf");
    export_gguf(tensors, source_gguf, GgufQuant::Uniform(GgmlDType::Q8_0), &q8)?;
    let mut paths = vec![q8];
    if source_type != GgmlDType::Q8_0 {
        let own = dir.join(format!("model.{}.gguf", type_name(source_type)));
        export_gguf(tensors, source_gguf, GgufQuant::LikeSource, &own)?;
        paths.push(own);
    }
    Ok(paths)
}

#[cfg(test)]
#[path = "export_gguf_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "export_gguf_tests_families.rs"]
mod tests_families;
