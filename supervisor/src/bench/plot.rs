//! `vmfleet bench --plot DIR`: the report's figures as SVG charts, one per figure group, drawn
//! with `plotters`' SVG backend (no fonts, no bitmap backends): `start.svg` (start throughput,
//! floor and vmfleet, against the VM count), `record.svg` (vmfleet's start unrecorded and
//! recorded) and `replay.svg` (the live run and its replay, in ms). A chart is written only when
//! its group has something measured.

use super::{BenchError, BenchReport};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Chart size in pixels.
const SIZE: (u32, u32) = (800, 480);

/// Write the charts of `report` into `dir` (created if missing); the files written.
pub fn plot(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::Failed(format!("--plot: creating {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    let start: Vec<Series> = vec![
        Series {
            name: "floor (kvm-ioctls, same threads)",
            color: BLUE,
            points: report
                .start
                .iter()
                .map(|row| (f64::from(row.vms), row.floor.median_vms_per_second))
                .collect(),
        },
        Series {
            name: "vmfleet",
            color: RED,
            points: report
                .start
                .iter()
                .filter_map(|row| {
                    let side = row.vmfleet.as_ref()?;
                    Some((f64::from(row.vms), side.median_vms_per_second))
                })
                .collect(),
        },
    ];
    let mut chart = |name: &str, title: &str, y: &str, series: &[Series]| {
        if series.iter().all(|s| s.points.is_empty()) {
            return Ok(());
        }
        let path = dir.join(name);
        let svg = lines(title, "VMs (2 vCPUs each)", y, series)
            .map_err(|e| BenchError::Failed(format!("--plot: drawing {name}: {e}")))?;
        std::fs::write(&path, svg)
            .map_err(|e| BenchError::Failed(format!("--plot: writing {}: {e}", path.display())))?;
        written.push(path);
        Ok::<(), BenchError>(())
    };
    chart(
        "start.svg",
        "start: nothing to every vCPU's first exit (medians)",
        "VMs/s",
        &start,
    )?;
    let side = |on: bool| {
        report
            .record
            .iter()
            .filter_map(|row| {
                let side = if on { &row.on } else { &row.off };
                Some((f64::from(row.vms), side.as_ref()?.median_vms_per_second))
            })
            .collect()
    };
    chart(
        "record.svg",
        "vmfleet's start, recorded to a trace and not (medians)",
        "VMs/s",
        &[
            Series {
                name: "recording off",
                color: BLUE,
                points: side(false),
            },
            Series {
                name: "recording on",
                color: RED,
                points: side(true),
            },
        ],
    )?;
    let trace = &report.trace;
    if let (Some(live), Some(replay)) = (trace.live_ms, trace.replay_ms) {
        let path = dir.join("replay.svg");
        let title = format!("vmfleet run --record of {} VMs and its replay", trace.vms);
        let svg = bars(&title, "ms", &[("live", live), ("replay", replay)])
            .map_err(|e| BenchError::Failed(format!("--plot: drawing replay.svg: {e}")))?;
        std::fs::write(&path, svg)
            .map_err(|e| BenchError::Failed(format!("--plot: writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// One line of a chart.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A drawing error, in words.
type DrawResult<T> = Result<T, String>;

/// A line chart of `series` against a logarithmic x axis, as SVG text.
fn lines(title: &str, x: &str, y: &str, series: &[Series]) -> DrawResult<String> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let y_max = all()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0.5f64..x_max).log_scale(), 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x)
            .y_desc(y)
            .draw()
            .map_err(|e| e.to_string())?;
        for s in series.iter().filter(|s| !s.points.is_empty()) {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color))
                .map_err(|e| e.to_string())?
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A bar chart of named values, as SVG text.
fn bars(title: &str, y: &str, values: &[(&str, f64)]) -> DrawResult<String> {
    let y_max = values.iter().map(|v| v.1).fold(1.0, f64::max) * 1.15;
    let names: Vec<String> = values.iter().map(|v| v.0.to_string()).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..values.len() as f64, 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(values.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &(_, v))| {
                let i = i as f64;
                Rectangle::new([(i + 0.2, 0.0), (i + 0.8, v)], BLUE.mix(0.7).filled())
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
