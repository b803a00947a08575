//! Runs any `.tflite` model on a Cortex-M (QEMU mps2-an386 or mps2-an500) with
//! mota-runtime, one `invoke` per input between the `bench_start`/`bench_end` markers, so
//! that the instructions of each inference can be counted. `scripts/runtime-bench.sh`
//! builds it, counts and prints the figures; run it through that script.
//!
//! Arguments (semihosting command line, `SYS_GET_CMDLINE`; QEMU:
//! `-semihosting-config enable=on,target=native,arg=runtime-bench,arg=MODEL,...`):
//! `runtime-bench MODEL INPUTS OUT [FIRST] [cached]`. MODEL is the `.tflite` file (at
//! most 1 MiB), INPUTS a `.npy` of shape (N, ...) in the model's input dtype, OUT the
//! `.npy` written with the N outputs (shape (N, *output_shape), the output's dtype),
//! FIRST runs only the first FIRST inputs, `cached` keeps the operators prepared
//! (`Interpreter::with_cache`, at most 64). Arguments are split at blanks: the script
//! passes file names without blanks, in the directory QEMU runs in.
//!
//! Prints `arena B` (`Interpreter::arena_used`), `cache B` (the prepared operators' slots
//! in use, 0 unless `cached`) and `invoked N`; on any error prints `runtime-bench: ...`
//! and exits with EXIT_FAILURE.
//!
//! Files and arguments go through the `semihosting` crate (already used by `board.rs`):
//! its `File` (SYS_OPEN, SYS_FLEN, SYS_READ, SYS_WRITE, SYS_CLOSE on drop) and `args`
//! (SYS_GET_CMDLINE) are safe wrappers, so this binary needs no `unsafe` and no raw
//! `syscall!` of cortex-m-semihosting.
//!
//! Memory: the model (1 MiB) and the arena (512 KiB) are locals of `main`. `build.rs`
//! moves this binary's stack top to 0x2040_0000, the end of the 4 MiB SSRAM2/3 that
//! mps2-an386 and mps2-an500 both map at 0x2000_0000; the other binaries keep the 256 KiB
//! of `memory.x`.
#![no_std]
#![no_main]

use core::ffi::CStr;
use core::fmt::{self, Write as _};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, heprintln, hprintln};
use mota_firmware::{bench_end, bench_start};
use mota_runtime::{DType, Interpreter, Model, PreparedOp, TensorInfo};
use panic_semihosting as _;
use semihosting::experimental::env::Args;
use semihosting::fs::File;
use semihosting::io::{Read as _, Write as _};

/// The largest model the bench holds.
const MODEL_MAX: usize = 1 << 20;
/// The interpreter's arena.
const ARENA: usize = 512 * 1024;
/// The longest `.npy` header read (NumPy writes 64 to a few hundred bytes).
const HEADER_MAX: usize = 4096;
/// Dimensions of an `.npy` shape: the row dimension and a tensor's (runtime's MAX_RANK
/// is 5).
const DIMS_MAX: usize = 8;

/// Buffers aligned as TFLM's harnesses align models and arenas.
#[repr(C, align(16))]
struct Aligned<const N: usize>([u8; N]);

/// Prints the error and ends the run with EXIT_FAILURE.
fn fail(message: fmt::Arguments<'_>) -> ! {
    heprintln!("runtime-bench: {}", message);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// A path argument as the NUL-terminated string semihosting opens.
struct Path([u8; 256]);

impl Path {
    fn new(arg: &str) -> Self {
        let mut bytes = [0u8; 256];
        match bytes.get_mut(..arg.len()) {
            Some(head) if arg.len() < 256 && !arg.contains('\0') => head.copy_from_slice(arg.as_bytes()),
            _ => fail(format_args!("path too long (255 bytes at most): {arg}")),
        }
        Self(bytes)
    }

    fn c_str(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.0).unwrap_or_else(|_| fail(format_args!("path without NUL")))
    }
}

fn open(what: &str, arg: &str) -> (File, usize) {
    let file =
        File::open(Path::new(arg).c_str()).unwrap_or_else(|e| fail(format_args!("cannot open {what} {arg}: {e}")));
    let len = file.metadata().unwrap_or_else(|e| fail(format_args!("cannot read the length of {arg}: {e}"))).len();
    let len = usize::try_from(len).unwrap_or_else(|_| fail(format_args!("{arg} is too large")));
    (file, len)
}

fn read_exact(file: &mut File, buf: &mut [u8], arg: &str) {
    file.read_exact(buf).unwrap_or_else(|e| fail(format_args!("cannot read {arg}: {e}")));
}

/// An `.npy` header: element type, shape and where the data starts.
struct NpyHeader<'h> {
    descr: &'h str,
    dims: [usize; DIMS_MAX],
    rank: usize,
    data_offset: usize,
}

impl NpyHeader<'_> {
    fn shape(&self) -> &[usize] {
        self.dims.get(..self.rank).unwrap_or_default()
    }
}

/// Reads and checks the header of the `.npy` file `file` into `buf`.
fn read_npy_header<'h>(file: &mut File, arg: &str, buf: &'h mut [u8; HEADER_MAX]) -> NpyHeader<'h> {
    let bad = |why: &str| -> ! { fail(format_args!("{arg} is not a .npy file this bench reads: {why}")) };
    let mut lead = [0u8; 10];
    file.read_exact(&mut lead).unwrap_or_else(|_| bad("shorter than a header"));
    if lead.get(..6) != Some(b"\x93NUMPY".as_slice()) {
        bad("no NumPy magic");
    }
    let (header_len, data_offset) = match lead[6] {
        1 => (usize::from(u16::from_le_bytes([lead[8], lead[9]])), 10),
        2 | 3 => {
            let mut more = [0u8; 2];
            file.read_exact(&mut more).unwrap_or_else(|_| bad("shorter than a header"));
            (u32::from_le_bytes([lead[8], lead[9], more[0], more[1]]) as usize, 12)
        }
        _ => bad("unknown format version"),
    };
    let text = buf.get_mut(..header_len).unwrap_or_else(|| bad("header longer than 4096 bytes"));
    file.read_exact(text).unwrap_or_else(|_| bad("truncated header"));
    let text = core::str::from_utf8(text).unwrap_or_else(|_| bad("header is not text"));
    let field = |key: &str| text.split_once(key).map(|(_, rest)| rest.trim_start()).unwrap_or_else(|| bad(key));
    let descr = field("'descr':").strip_prefix('\'').and_then(|s| s.split_once('\'')).map(|(d, _)| d);
    let descr = descr.unwrap_or_else(|| bad("unreadable descr"));
    if !field("'fortran_order':").starts_with("False") {
        bad("Fortran order");
    }
    let shape = field("'shape':").strip_prefix('(').and_then(|s| s.split_once(')')).map(|(s, _)| s);
    let shape = shape.unwrap_or_else(|| bad("unreadable shape"));
    let mut dims = [0usize; DIMS_MAX];
    let mut rank = 0;
    for item in shape.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let dim = item.parse().unwrap_or_else(|_| bad("unreadable shape"));
        *dims.get_mut(rank).unwrap_or_else(|| bad("more than 8 dimensions")) = dim;
        rank += 1;
    }
    NpyHeader { descr, dims, rank, data_offset: data_offset + header_len }
}

/// Checks that the inputs' dtype is the model input's; names the mismatch otherwise.
fn check_dtype(found: &str, input: &TensorInfo<'_>, arg: &str) {
    let matches = match input.dtype {
        DType::Int8 => matches!(found, "|i1" | "<i1" | ">i1"),
        DType::UInt8 => matches!(found, "|u1" | "<u1" | ">u1"),
        dtype => found == dtype.npy_descr(),
    };
    if matches {
        return;
    }
    let name = match found {
        "|i1" | "<i1" | ">i1" => "int8",
        "|u1" | "<u1" | ">u1" => "uint8",
        "<i2" => "int16",
        "<f4" => "float32",
        ">f4" => "big-endian float32",
        _ => "an unsupported dtype",
    };
    fail(format_args!(
        "{arg} holds {name} ('{found}') but the model's input 0 is {} ('{}'): give the inputs in the model's input type",
        input.dtype.name(),
        input.dtype.npy_descr()
    ))
}

/// A `.npy` header in a fixed buffer, padded as NumPy pads it.
struct Header {
    bytes: [u8; 256],
    len: usize,
}

impl fmt::Write for Header {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The version 1.0 `.npy` header for `rows` rows of `output`.
fn output_header(rows: usize, output: &TensorInfo<'_>) -> Result<Header, fmt::Error> {
    let mut h = Header { bytes: [0; 256], len: 10 };
    write!(h, "{{'descr': '{}', 'fortran_order': False, 'shape': ({}", output.dtype.npy_descr(), rows)?;
    for dim in output.shape.dims() {
        write!(h, ", {dim}")?;
    }
    h.write_str(if output.shape.dims().is_empty() { ",), }" } else { "), }" })?;
    while !(h.len + 1).is_multiple_of(64) {
        h.write_str(" ")?;
    }
    h.write_str("\n")?;
    let dict = u16::try_from(h.len - 10).map_err(|_| fmt::Error)?;
    h.bytes[..6].copy_from_slice(b"\x93NUMPY");
    h.bytes[6..8].copy_from_slice(&[1, 0]);
    h.bytes[8..10].copy_from_slice(&dict.to_le_bytes());
    Ok(h)
}

fn run(args: &Args<1024>, model_buf: &mut [u8], arena: &mut [u8]) {
    let mut args = args.into_iter().skip(1).map(|a| a.unwrap_or_else(|_| fail(format_args!("argument is not UTF-8"))));
    let usage = || -> ! { fail(format_args!("usage: runtime-bench MODEL.tflite INPUTS.npy OUT.npy [FIRST] [cached]")) };
    let (Some(model_arg), Some(inputs_arg), Some(out_arg)) = (args.next(), args.next(), args.next()) else { usage() };
    let (mut first, mut cached) = (None, false);
    for arg in args {
        match arg {
            "cached" if !cached => cached = true,
            k if first.is_none() && !cached => first = Some(k.parse::<usize>().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }

    let (mut file, len) = open("the model", model_arg);
    if len > model_buf.len() {
        fail(format_args!("{model_arg} is {len} bytes; the bench holds models of {} bytes at most", model_buf.len()));
    }
    let model_bytes = model_buf.get_mut(..len).unwrap_or_default();
    read_exact(&mut file, model_bytes, model_arg);
    drop(file);
    let model = Model::parse(model_bytes).unwrap_or_else(|e| fail(format_args!("model refused: {e}")));
    let input = model.input(0).unwrap_or_else(|e| fail(format_args!("model input 0: {e}")));
    let output = model.output(0).unwrap_or_else(|e| fail(format_args!("model output 0: {e}")));

    let (mut inputs, inputs_len) = open("the inputs", inputs_arg);
    let mut header_buf = [0u8; HEADER_MAX];
    let header = read_npy_header(&mut inputs, inputs_arg, &mut header_buf);
    check_dtype(header.descr, &input, inputs_arg);
    let Some((&rows, row_dims)) = header.shape().split_first() else {
        fail(format_args!("{inputs_arg} has no row dimension: its shape must be (N, ...)"))
    };
    let row_elements = row_dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if row_elements != Some(input.shape.elements()) {
        fail(format_args!(
            "{inputs_arg} has rows of shape {:?}, the model's input 0 has shape {:?}: element counts differ",
            row_dims,
            input.shape.dims()
        ));
    }
    let row_bytes = input.bytes();
    let data = rows.checked_mul(row_bytes).and_then(|d| d.checked_add(header.data_offset));
    if data != Some(inputs_len) {
        fail(format_args!(
            "{inputs_arg} is {inputs_len} bytes; a header of {} bytes and {rows} rows of {row_bytes} bytes make {:?}",
            header.data_offset, data
        ));
    }
    let run_rows = first.map_or(rows, |k| k.min(rows));

    let mut slots = [const { PreparedOp::EMPTY }; 64];
    let used = if cached { model.operator_count().min(slots.len()) } else { 0 };
    let cache = slots.get_mut(..used).unwrap_or_default();
    let mut interp = Interpreter::with_cache(model, arena, cache).unwrap_or_else(|e| fail(format_args!("{e}")));
    hprintln!("cache {}", used * core::mem::size_of::<PreparedOp<'_>>());
    let header = output_header(run_rows, &output).unwrap_or_else(|_| fail(format_args!("output shape too long")));
    let out_path = Path::new(out_arg);
    let mut out = File::create(out_path.c_str()).unwrap_or_else(|e| fail(format_args!("cannot create {out_arg}: {e}")));
    let write = |out: &mut File, bytes: &[u8]| {
        out.write_all(bytes).unwrap_or_else(|e| fail(format_args!("cannot write {out_arg}: {e}")));
    };
    write(&mut out, header.bytes.get(..header.len).unwrap_or_default());
    for row in 0..run_rows {
        let slot = interp.input(0).unwrap_or_else(|e| fail(format_args!("{e}")));
        read_exact(&mut inputs, slot, inputs_arg);
        bench_start();
        let result = interp.invoke();
        bench_end();
        result.unwrap_or_else(|e| fail(format_args!("input {row}: {e}")));
        write(&mut out, interp.output(0).unwrap_or_else(|e| fail(format_args!("{e}"))));
    }
    drop(out);
    hprintln!("arena {}", interp.arena_used());
    hprintln!("invoked {}", run_rows);
}

#[entry]
fn main() -> ! {
    let mut model = Aligned([0u8; MODEL_MAX]);
    let mut arena = Aligned([0u8; ARENA]);
    let args = semihosting::experimental::env::args::<1024>()
        .unwrap_or_else(|e| fail(format_args!("cannot read the command line: {e}")));
    run(&args, &mut model.0, &mut arena.0);
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}
