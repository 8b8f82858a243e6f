//! `roar-events-dump DIR|FILE...`: print trace records as text, for debugging.
//!
//! One line per record: `<op> <t_ns> <size> <mtime_ns> <path> [-> <path2>]`,
//! preceded by a `# file pid=.. ppid=..` line per file. Non-UTF-8 path bytes
//! are shown as `\xNN`. This tool is for humans; the Python reader does not
//! depend on its output format.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use roar_events::{decode, display_path, read_trace_dir, TraceFile};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty()
        || args
            .iter()
            .any(|a| a == Path::new("-h") || a == Path::new("--help"))
    {
        eprintln!("usage: roar-events-dump DIR|FILE.ev ...");
        return ExitCode::from(2);
    }
    let mut status = ExitCode::SUCCESS;
    for arg in args {
        let files = if arg.is_dir() {
            read_trace_dir(&arg)
        } else {
            std::fs::read(&arg).and_then(|b| {
                decode(&b)
                    .map(|trace| {
                        vec![TraceFile {
                            file: arg.clone(),
                            trace,
                        }]
                    })
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
        };
        match files {
            Ok(files) => {
                for f in files {
                    print_file(&f);
                    if f.trace.error.is_some() {
                        status = ExitCode::FAILURE;
                    }
                }
            }
            Err(e) => {
                eprintln!("roar-events-dump: {}: {e}", arg.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

fn print_file(f: &TraceFile) {
    let h = f.trace.header;
    println!("# {} pid={} ppid={}", f.file.display(), h.pid, h.ppid);
    for r in &f.trace.records {
        let mut line = format!(
            "{} {} {} {} {}",
            r.op,
            r.t_ns,
            r.size,
            r.mtime_ns,
            display_path(&r.path)
        );
        if let Some(p2) = &r.path2 {
            line.push_str(" -> ");
            line.push_str(&display_path(p2));
        }
        println!("{line}");
    }
    if let Some(e) = &f.trace.error {
        println!("# error: {e}");
    }
}
