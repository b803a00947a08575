//! `mota model` and `mota valset`: look inside a `.tflite`, run it, evaluate it and time
//! it with the same runtime the devices run, so any model can be checked from outside
//! against another runtime (inputs and outputs as `.npy`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use mota_runtime::npy::Npy;
use mota_runtime::validation::{self, ClassCount, Clock, ValidationSet};
use mota_runtime::{DType, Interpreter, Model, PreparedOp, TensorInfo};
use serde::Serialize;

use crate::Ctx;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Upload a version to the backend, which checks it with the device runtime and
    /// evaluates it on its validation set before storing it.
    Push(crate::registry::PushArgs),
    /// Models in the backend's registry.
    List,
    /// A model and its versions, or one version (digests, rule, deltas).
    Show {
        /// Model name.
        model: String,
        /// A version of it.
        version: Option<String>,
    },
    /// Operators, tensors, arena size, and whether devices can run it (and why not).
    Inspect {
        /// The .tflite file.
        file: PathBuf,
    },
    /// One inference per row of IN; outputs written as the model's output type.
    Run {
        /// The .tflite file.
        file: PathBuf,
        /// Inputs, shape (N, *input shape), in the model's input type.
        #[arg(long)]
        inputs: PathBuf,
        /// Where to write the outputs (.npy).
        #[arg(long)]
        out: PathBuf,
    },
    /// Accuracy and latency on a validation set (from `mota valset make`).
    Eval {
        /// The .tflite file.
        file: PathBuf,
        /// The validation set.
        set: PathBuf,
    },
    /// Mean and p99 time per inference over the rows of IN, start-up excluded.
    Bench {
        /// The .tflite file.
        file: PathBuf,
        /// Inputs, shape (N, *input shape), in the model's input type.
        #[arg(long)]
        inputs: PathBuf,
        /// Passes over the inputs.
        #[arg(long, default_value_t = 10)]
        passes: usize,
    },
}

#[derive(Subcommand)]
pub enum ValsetCommand {
    /// Build a validation set for MODEL from .npy inputs and labels (or expected outputs).
    /// Float inputs are quantized with the model's input scale and zero point.
    Make {
        /// The model the set is for.
        model: PathBuf,
        /// Inputs, shape (N, *input shape), float32 or the model's input type.
        #[arg(long)]
        inputs: PathBuf,
        /// Integer class labels, shape (N,).
        #[arg(long, conflicts_with = "outputs", required_unless_present = "outputs")]
        labels: Option<PathBuf>,
        /// Expected outputs, shape (N, *output shape), in the model's output type.
        #[arg(long)]
        outputs: Option<PathBuf>,
        /// Largest accepted per-element difference with --outputs.
        #[arg(long, default_value_t = 0)]
        tolerance: u8,
        /// Where to write the set.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Upload a set to the backend (versions then name it by digest with `--valset-sha256`).
    Push {
        /// The set file.
        file: PathBuf,
    },
    /// Validation sets in the backend.
    List,
}

pub async fn run(cmd: ModelCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        ModelCommand::Push(args) => crate::registry::push(&ctx.client()?, args, ctx.json).await,
        ModelCommand::List => crate::registry::list_models(&ctx.client()?, ctx.json).await,
        ModelCommand::Show { model, version } => {
            crate::registry::show(&ctx.client()?, &model, version.as_deref(), ctx.json).await
        }
        ModelCommand::Inspect { file } => inspect(&file, ctx.json),
        ModelCommand::Run { file, inputs, out } => run_model(&file, &inputs, &out),
        ModelCommand::Eval { file, set } => eval(&file, &set, ctx.json),
        ModelCommand::Bench { file, inputs, passes } => bench(&file, &inputs, passes),
    }
}

pub async fn run_valset(cmd: ValsetCommand, ctx: &Ctx) -> Result<()> {
    match cmd {
        ValsetCommand::Make { model, inputs, labels, outputs, tolerance, out } => {
            make_valset(&model, &inputs, labels, outputs, tolerance, &out)
        }
        ValsetCommand::Push { file } => crate::registry::push_set(&ctx.client()?, &file, ctx.json).await,
        ValsetCommand::List => crate::registry::list_sets(&ctx.client()?, ctx.json).await,
    }
}

fn make_valset(
    model: &Path,
    inputs: &Path,
    labels: Option<PathBuf>,
    outputs: Option<PathBuf>,
    tolerance: u8,
    out: &Path,
) -> Result<()> {
    let bytes = read(model)?;
    let model = parse(model, &bytes)?;
    let input = model.input(0)?;
    let x = read_npy(inputs)?;
    let data = match (x.descr.as_str(), input.dtype) {
        (d, t) if d == t.npy_descr() => x.data.clone(),
        ("<f4", DType::Int8 | DType::UInt8 | DType::Int16) => quantize_floats(&input, &x.data)?,
        (d, t) => bail!("{}: dtype {d} cannot feed a {} input", inputs.display(), t.name()),
    };
    let dims: Vec<usize> = input.shape.dims().to_vec();
    let labels = labels.map(|p| read_labels(&p)).transpose()?;
    let classes = model.output(0)?.shape.dims().last().copied().unwrap_or(1) as u32;
    let expected = outputs.map(|p| read_npy(&p)).transpose()?;
    let set = validation::build(
        input.dtype,
        &dims,
        &data,
        labels.as_deref().map(|l| (l, classes)),
        expected.as_ref().map(|o| (o.data.as_slice(), tolerance)),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(out, &set).with_context(|| format!("writing {}", out.display()))?;
    let parsed = ValidationSet::parse(&set).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("wrote {} ({} records, {} bytes)", out.display(), parsed.len(), set.len());
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<Model<'a>> {
    Model::parse(bytes).with_context(|| format!("{}: devices cannot run this model", path.display()))
}

fn read_npy(path: &Path) -> Result<Npy> {
    Npy::parse(&read(path)?).with_context(|| format!("{}", path.display()))
}

fn read_labels(path: &Path) -> Result<Vec<u16>> {
    let npy = read_npy(path)?;
    let values: Vec<i64> = match npy.descr.as_str() {
        "<i4" => npy.data.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        "<i8" => npy.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
        "|u1" | "|i1" => npy.data.iter().map(|&b| i64::from(b)).collect(),
        d => bail!("{}: labels must be integers, found dtype {d}", path.display()),
    };
    values
        .into_iter()
        .map(|v| u16::try_from(v).with_context(|| format!("{}: label {v} out of range", path.display())))
        .collect()
}

#[derive(Serialize)]
struct TensorView {
    index: usize,
    name: String,
    shape: Vec<usize>,
    dtype: &'static str,
    scale: Option<f32>,
    zero_point: Option<i32>,
}

impl From<&TensorInfo<'_>> for TensorView {
    fn from(t: &TensorInfo<'_>) -> Self {
        let q = t.quant().ok();
        Self {
            index: t.index,
            name: t.name().to_owned(),
            shape: t.shape.dims().to_vec(),
            dtype: t.dtype.name(),
            scale: q.map(|q| q.scale),
            zero_point: q.map(|q| q.zero_point),
        }
    }
}

#[derive(Serialize)]
struct Inspection {
    file: String,
    bytes: usize,
    supported: bool,
    reason: Option<String>,
    operators: Vec<&'static str>,
    tensors: usize,
    inputs: Vec<TensorView>,
    outputs: Vec<TensorView>,
    arena_bytes: Option<usize>,
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let bytes = read(path)?;
    let report = match Model::parse(&bytes) {
        Ok(model) => Inspection {
            file: path.display().to_string(),
            bytes: bytes.len(),
            supported: true,
            reason: None,
            operators: (0..model.operator_count())
                .map(|i| model.operator(i).map(|o| o.op.name()))
                .collect::<Result<_, _>>()?,
            tensors: model.tensor_count(),
            inputs: (0..model.input_count()).map(|i| model.input(i).map(|t| (&t).into())).collect::<Result<_, _>>()?,
            outputs: (0..model.output_count())
                .map(|i| model.output(i).map(|t| (&t).into()))
                .collect::<Result<_, _>>()?,
            arena_bytes: Some(mota_runtime::arena_size(&model)?),
        },
        Err(e) => Inspection {
            file: path.display().to_string(),
            bytes: bytes.len(),
            supported: false,
            reason: Some(e.to_string()),
            operators: Vec::new(),
            tensors: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
            arena_bytes: None,
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} ({} bytes)", report.file, report.bytes);
        match &report.reason {
            None => println!("supported   yes"),
            Some(reason) => println!("supported   NO: {reason}"),
        }
        if report.supported {
            println!("operators   {} ({})", report.operators.len(), summarize(&report.operators));
            println!("tensors     {}", report.tensors);
            for (kind, list) in [("input", &report.inputs), ("output", &report.outputs)] {
                for t in list {
                    let q = t
                        .scale
                        .map_or(String::new(), |s| format!(" scale {s} zero point {}", t.zero_point.unwrap_or(0)));
                    println!("{kind:<11} {:?} {}{q}  ({})", t.shape, t.dtype, t.name);
                }
            }
            println!("arena       {} bytes", report.arena_bytes.unwrap_or(0));
        }
    }
    if !report.supported {
        std::process::exit(1);
    }
    Ok(())
}

/// `CONV_2D ×2, SOFTMAX` from a list of names.
fn summarize(ops: &[&str]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for op in ops {
        match counts.iter_mut().find(|(name, _)| name == op) {
            Some((_, n)) => *n += 1,
            None => counts.push((op, 1)),
        }
    }
    counts
        .iter()
        .map(|(op, n)| if *n > 1 { format!("{op} ×{n}") } else { (*op).to_owned() })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Float inputs as the codes of a quantized model input, with the runtime's QUANTIZE
/// kernel: the same rounding as the device's float wrapper.
fn quantize_floats(input: &TensorInfo<'_>, floats: &[u8]) -> Result<Vec<u8>> {
    use mota_runtime::kernels::{I16, codes_mut, quantize::quantize};
    let (q, mut out) = (input.quant()?, vec![0u8; floats.len() / 4 * input.dtype.size()]);
    let bad = || anyhow::anyhow!("inputs are not whole {} values", input.dtype.name());
    match input.dtype {
        DType::Int8 => quantize::<i8>(q, floats, codes_mut(&mut out).ok_or_else(bad)?)?,
        DType::UInt8 => quantize::<u8>(q, floats, codes_mut(&mut out).ok_or_else(bad)?)?,
        _ => quantize::<I16>(q, floats, codes_mut(&mut out).ok_or_else(bad)?)?,
    }
    Ok(out)
}

/// A model, its arena and a slot per operator to keep it prepared in, ready to run.
fn load<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Model<'a>, Vec<u8>, Vec<PreparedOp<'a>>)> {
    let model = parse(path, bytes)?;
    let arena = vec![0u8; mota_runtime::arena_size(&model)?];
    Ok((model, arena, vec![PreparedOp::EMPTY; model.operator_count()]))
}

fn check_inputs(x: &Npy, input: &TensorInfo<'_>, path: &Path) -> Result<()> {
    let want = input.dtype.npy_descr();
    if x.descr != want {
        bail!(
            "{}: dtype {} but the model's input is {}; convert it first",
            path.display(),
            x.descr,
            input.dtype.name()
        );
    }
    if x.rows() * input.bytes() != x.data.len() {
        bail!("{}: rows of shape {:?} expected, found shape {:?}", path.display(), input.shape.dims(), x.shape);
    }
    Ok(())
}

fn run_model(path: &Path, inputs: &Path, out: &Path) -> Result<()> {
    let bytes = read(path)?;
    let (model, mut arena, mut cache) = load(path, &bytes)?;
    let (input, output) = (model.input(0)?, model.output(0)?);
    let x = read_npy(inputs)?;
    check_inputs(&x, &input, inputs)?;
    let mut interp = Interpreter::with_cache(model, &mut arena, &mut cache)?;
    let mut data = Vec::with_capacity(x.rows() * output.bytes());
    for row in 0..x.rows() {
        interp.input(0)?.copy_from_slice(x.row(row).unwrap_or_default());
        interp.invoke()?;
        data.extend_from_slice(interp.output(0)?);
    }
    let descr = output.dtype.npy_descr();
    let mut shape = vec![x.rows()];
    shape.extend(output.shape.dims());
    std::fs::write(out, Npy { descr: descr.into(), shape, data }.to_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} ({} inferences)", out.display(), x.rows());
    Ok(())
}

struct HostClock(Instant);

impl Clock for HostClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

#[derive(Serialize)]
struct EvalReport {
    records: u32,
    correct: u32,
    accuracy_permille: u16,
    mean_latency_us: u32,
    max_latency_us: u32,
    arena_bytes: u32,
    per_class: Vec<(u32, u32)>,
}

fn eval(path: &Path, set_path: &Path, json: bool) -> Result<()> {
    let bytes = read(path)?;
    let set_bytes = read(set_path)?;
    let set = ValidationSet::parse(&set_bytes).map_err(|e| anyhow::anyhow!("{}: {e}", set_path.display()))?;
    let (model, mut arena, mut cache) = load(path, &bytes)?;
    let classes = match set.expectation {
        validation::Expectation::Label { classes } => classes as usize,
        validation::Expectation::Output { .. } => 0,
    };
    let mut counts = vec![ClassCount::default(); classes];
    let mut interp = Interpreter::with_cache(model, &mut arena, &mut cache)?;
    let r = validation::evaluate(&mut interp, &set, &HostClock(Instant::now()), Some(&mut counts))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = EvalReport {
        records: r.records,
        correct: r.correct,
        accuracy_permille: r.accuracy_permille,
        mean_latency_us: r.mean_latency_us,
        max_latency_us: r.max_latency_us,
        arena_bytes: r.arena_used,
        per_class: counts.iter().map(|c| (c.seen, c.correct)).collect(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("accuracy    {:.1} % ({} of {})", f64::from(r.accuracy_permille) / 10.0, r.correct, r.records);
    println!("latency     mean {} µs, max {} µs (host)", r.mean_latency_us, r.max_latency_us);
    println!("arena       {} bytes", r.arena_used);
    for (class, c) in counts.iter().enumerate().filter(|(_, c)| c.seen > 0) {
        println!("class {class:<5} {}/{}", c.correct, c.seen);
    }
    Ok(())
}

fn bench(path: &Path, inputs: &Path, passes: usize) -> Result<()> {
    let bytes = read(path)?;
    let (model, mut arena, mut cache) = load(path, &bytes)?;
    let input = model.input(0)?;
    let x = read_npy(inputs)?;
    check_inputs(&x, &input, inputs)?;
    let mut interp = Interpreter::with_cache(model, &mut arena, &mut cache)?;
    let mut times = Vec::with_capacity(passes * x.rows());
    for _ in 0..passes.max(1) {
        for row in 0..x.rows() {
            interp.input(0)?.copy_from_slice(x.row(row).unwrap_or_default());
            let start = Instant::now();
            interp.invoke()?;
            times.push(start.elapsed().as_nanos() as u64);
        }
    }
    if times.is_empty() {
        bail!("{}: no inputs", inputs.display());
    }
    times.sort_unstable();
    let mean = times.iter().sum::<u64>() as f64 / times.len() as f64;
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!("inferences  {}", times.len());
    println!("mean        {:.1} µs", mean / 1000.0);
    println!("p99         {:.1} µs", p99 as f64 / 1000.0);
    Ok(())
}
