//! Data-path benchmark: 100,000 generated pairs through import, export and stats.
//!
//! Run with `cargo bench --bench data`. Reports medians of 5 runs; targets from the
//! foundation issue: import ≥ 50,000 pairs/s, export ≥ 100,000 pairs/s, `verdict stats`
//! (the whole process) under 200 ms.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use verdict::data::export::{self, ExportFormat, SplitFilter};
use verdict::data::import::parse_file;
use verdict::store::{OpenMode, Store};

const PAIRS: usize = 100_000;
const RUNS: usize = 5;
const LANGUAGES: [(&str, &str, &str); 7] = [
    ("en", "How do I dispute card payment number", "Open the app, choose the payment and tap Dispute"),
    ("es", "¿Cómo reclamo el cargo número", "Abra la aplicación, elija el pago y pulse Reclamar"),
    (
        "de",
        "Wie widerspreche ich der Abbuchung Nummer",
        "Öffnen Sie die App, wählen Sie die Zahlung und tippen Sie auf Widerspruch",
    ),
    (
        "fr",
        "Comment contester le prélèvement numéro",
        "Ouvrez l'application, choisissez le paiement et touchez Contester",
    ),
    ("zh", "我如何对这笔扣款提出异议，编号", "请打开应用，选择该笔付款并点击“争议”"),
    (
        "ja",
        "この引き落としに異議を申し立てるには？番号",
        "アプリを開き、該当の支払いを選んで「異議申し立て」を押してください",
    ),
    ("ar", "كيف أعترض على الخصم رقم", "افتح التطبيق واختر الدفعة ثم اضغط على اعتراض"),
];

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.jsonl");
    write_pairs(&input);
    let size_mb = std::fs::metadata(&input).unwrap().len() as f64 / 1e6;
    println!("input: {PAIRS} pairs, {size_mb:.1} MB, 7 languages");

    let mut import_times = Vec::new();
    let mut parse_times = Vec::new();
    let mut export_times = Vec::new();
    let db = dir.path().join("bench.db");
    for run in 0..RUNS {
        let path = dir.path().join(format!("run{run}.db"));
        let start = Instant::now();
        let parsed = parse_file(&input, None).unwrap();
        assert!(parsed.errors.is_empty());
        parse_times.push(start.elapsed());
        let mut store = Store::open(&path, OpenMode::CreateIfMissing).unwrap();
        let summary = store.import_records(&parsed.records).unwrap();
        import_times.push(start.elapsed());
        assert_eq!(summary.judgments, PAIRS);

        let start = Instant::now();
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.path().join("out.jsonl")).unwrap());
        let written = export::export(&store, ExportFormat::Standard, SplitFilter::All, &mut out).unwrap();
        export_times.push(start.elapsed());
        assert_eq!(written.pairs, PAIRS);
        drop(store);
        if run == 0 {
            std::fs::rename(&path, &db).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let mut stats_times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(&db).arg("stats").output().unwrap();
        stats_times.push(start.elapsed());
        assert!(out.status.success());
    }
    let import = median(&mut import_times);
    let parse = median(&mut parse_times);
    let export = median(&mut export_times);
    let stats = median(&mut stats_times);
    println!(
        "import  median {:>8.1} ms  {:>9.0} pairs/s  (target ≥ 50,000)",
        ms(import),
        PAIRS as f64 / import.as_secs_f64()
    );
    println!(
        "  of which reading and checking the file {:.1} ms, writing the store {:.1} ms",
        ms(parse),
        ms(import - parse)
    );
    println!(
        "export  median {:>8.1} ms  {:>9.0} pairs/s  (target ≥ 100,000)",
        ms(export),
        PAIRS as f64 / export.as_secs_f64()
    );
    println!("stats   median {:>8.1} ms  (whole `verdict stats` process, target < 200 ms)", ms(stats));
}

fn write_pairs(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..PAIRS {
        let (lang, question, answer) = LANGUAGES[i % LANGUAGES.len()];
        let line = serde_json::json!({
            "id": format!("bench-{i}"),
            "prompt": format!("{question} {i}?"),
            "chosen": format!("{answer} ({i})."),
            "rejected": format!("{answer}? {i} 🙂"),
            "language": lang,
            "domain": (["banking", "healthcare", "insurance"][i % 3]),
            "tags": ["bench"],
        });
        writeln!(out, "{line}").unwrap();
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
