use super::*;

/// A DPO run's metrics as the store holds them: 60 training steps, an evaluation every 10.
fn dpo_metrics() -> Vec<(String, Vec<(i64, f64)>)> {
    let train = |f: &dyn Fn(f64) -> f64| (1..=60).map(|s| (s, f(s as f64))).collect::<Vec<_>>();
    let eval = |f: &dyn Fn(f64) -> f64| (1..=6).map(|e| (e * 10, f((e * 10) as f64))).collect::<Vec<_>>();
    let margin = |s: f64| 2.0 * (1.0 - (-s / 20.0).exp());
    vec![
        ("loss".into(), train(&|s| 0.693 * (-s / 25.0).exp() + 0.05 * (s * 0.7).sin().abs())),
        ("eval_loss".into(), eval(&|s| 0.693 * (-s / 30.0).exp() + 0.08)),
        ("rewards/margins".into(), train(&margin)),
        ("rewards/chosen".into(), train(&|s| 0.4 * margin(s))),
        ("rewards/rejected".into(), train(&|s| -0.6 * margin(s))),
        ("eval_rewards/margins".into(), eval(&|s| 0.8 * margin(s))),
        ("rewards/accuracies".into(), train(&|s| (0.5 + s / 100.0).min(1.0))),
        ("eval_rewards/accuracies".into(), eval(&|s| (0.45 + s / 120.0).min(1.0))),
        ("learning_rate".into(), train(&|_| 5e-7)),
    ]
}

#[test]
fn groups_trl_metrics_into_loss_rewards_and_accuracy() {
    let panels = training_panels(dpo_metrics());
    let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(titles, ["Loss", "Rewards", "Accuracy"]);
    let names = |i: usize| panels[i].series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>();
    assert_eq!(names(0), ["train", "eval"]);
    assert_eq!(names(1), ["margins", "chosen", "rejected", "eval margins"]);
    assert!(panels[1].series[3].dashed && !panels[1].series[0].dashed);
    assert_eq!(panels[1].series[3].color, panels[1].series[0].color, "an eval metric shares its train twin's color");
    assert_eq!(panels[2].y_range, Some((0.0, 1.0)));
    // An SFT run has only a loss: one panel.
    let sft = training_panels(vec![("loss".into(), vec![(1, 2.0), (2, 1.5)])]);
    assert_eq!(sft.len(), 1);
    assert!(training_panels(vec![("learning_rate".into(), vec![(1, 1e-6)])]).is_empty());
}

#[track_caller]
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic bytes");
    // Decodes, with the size the layout asked for.
    let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("a valid PNG");
    assert_eq!(reader.info().width, WIDTH);
}

#[track_caller]
fn assert_svg(path: &Path, must_contain: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains(must_contain), "the SVG has its text as text");
}

#[test]
fn writes_png_and_svg_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let panels = training_panels(dpo_metrics());
    let png_path = dir.path().join("run.png");
    write_plot(&png_path, "run 7: dpo on base", &panels).unwrap();
    assert_png(&png_path);
    let svg_path = dir.path().join("run.SVG");
    write_plot(&svg_path, "run 7: dpo on base", &panels).unwrap();
    assert_svg(&svg_path, "run 7: dpo on base");
    if let Ok(keep) = std::env::var("VERDICT_KEEP_PLOT") {
        std::fs::copy(&png_path, keep).unwrap();
    }
}

#[test]
fn one_point_nan_and_infinity_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<(String, Vec<(i64, f64)>)>)> = vec![
        ("one point", vec![("loss".into(), vec![(1, 0.69)])]),
        ("all NaN", vec![("loss".into(), vec![(1, f64::NAN), (2, f64::NAN)])]),
        ("NaN gap", vec![("loss".into(), vec![(1, 0.7), (2, f64::NAN), (3, f64::INFINITY), (4, 0.5), (5, 0.4)])]),
        ("flat", vec![("rewards/accuracies".into(), vec![(3, 1.0), (1, 1.0), (2, 1.0)])]),
        ("empty series", vec![("loss".into(), vec![]), ("eval_loss".into(), vec![(5, 0.6)])]),
    ];
    for (name, metrics) in cases {
        let panels = training_panels(metrics);
        for extension in ["png", "svg"] {
            let path = dir.path().join(format!("{}.{extension}", name.replace(' ', "_")));
            write_plot(&path, name, &panels).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(std::fs::metadata(&path).unwrap().len() > 0);
        }
    }
}

#[test]
fn non_finite_values_break_the_line() {
    let runs = segments(&[(4, 0.5), (1, 0.7), (2, f64::NAN), (3, f64::INFINITY), (5, 0.4)]);
    assert_eq!(runs, vec![vec![(1, 0.7)], vec![(4, 0.5), (5, 0.4)]]);
}

#[test]
fn unknown_extension_and_no_panels_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let panels = training_panels(dpo_metrics());
    for name in ["run.jpg", "run"] {
        let error = write_plot(&dir.path().join(name), "t", &panels).unwrap_err();
        assert!(matches!(error, PlotError::UnknownFormat(_)), "{error}");
        assert!(error.to_string().contains(".png or .svg"), "{error}");
    }
    assert!(matches!(write_plot(&dir.path().join("run.png"), "t", &[]), Err(PlotError::NoData)));
    let missing = dir.path().join("no/such/dir/run.svg");
    assert!(matches!(write_plot(&missing, "t", &panels), Err(PlotError::Write { .. })));
}

#[test]
fn the_legend_goes_to_the_emptiest_corner() {
    let panels = training_panels(dpo_metrics());
    let corner = |panel: &Panel| {
        let (x, y) = ranges(panel);
        legend_corner(panel, &x, &y)
    };
    // A falling loss leaves the upper right free; an accuracy rising from 0.5 to 1 fills it and
    // leaves the upper left (above its start) and the lower right free: upper first.
    assert_eq!(corner(&panels[0]), SeriesLabelPosition::UpperRight);
    assert_eq!(corner(&panels[2]), SeriesLabelPosition::UpperLeft);
}
