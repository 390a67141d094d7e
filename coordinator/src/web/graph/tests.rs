//! Tests of the pipeline graph: exact markup of small graphs, a golden
//! file of a larger one, ordering, and a seeded property test of the edge
//! geometry (no edge through a box, no two edges on top of each other).

use super::layout::{layout, EdgePath, JobBox, Layout};
use super::*;

fn job(id: u64, name: &str, stage_index: usize, needs: Option<&[&str]>) -> GraphJob {
    GraphJob {
        id,
        name: name.to_owned(),
        stage: format!("stage{stage_index}"),
        stage_index,
        needs: needs.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
        status: "success".to_owned(),
        detail: "12s · eagle-1".to_owned(),
    }
}

#[test]
fn empty_input_is_an_empty_svg() {
    assert_eq!(
        render_svg(&[]),
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph\" role=\"img\" \
         aria-label=\"Pipeline graph\" viewBox=\"0 0 0 0\" width=\"0\" height=\"0\"></svg>"
    );
}

#[test]
fn two_jobs_and_a_straight_edge() {
    let jobs = [
        job(1, "build", 0, None),
        job(2, "test", 1, Some(&["build"])),
    ];
    assert_eq!(
        render_svg(&jobs),
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"graph\" role=\"img\" \
         aria-label=\"Pipeline graph\" viewBox=\"0 0 472 98\" width=\"472\" height=\"98\">\
         <text class=\"stage\" x=\"16\" y=\"18\">stage0</text>\
         <text class=\"stage\" x=\"266\" y=\"18\">stage1</text>\
         <path class=\"edge\" data-from=\"1\" data-to=\"2\" d=\"M206 59 L266 59\"/>\
         <a href=\"/jobs/1\"><g class=\"job\" id=\"job-1\" data-status=\"success\">\
         <title>build: success</title>\
         <rect x=\"16\" y=\"36\" width=\"190\" height=\"46\" rx=\"6\"/>\
         <circle class=\"dot\" cx=\"32\" cy=\"59\" r=\"5\"/>\
         <text class=\"name\" x=\"46\" y=\"55\">build</text>\
         <text class=\"detail\" x=\"46\" y=\"72\">12s · eagle-1</text></g></a>\
         <a href=\"/jobs/2\"><g class=\"job\" id=\"job-2\" data-status=\"success\">\
         <title>test: success</title>\
         <rect x=\"266\" y=\"36\" width=\"190\" height=\"46\" rx=\"6\"/>\
         <circle class=\"dot\" cx=\"282\" cy=\"59\" r=\"5\"/>\
         <text class=\"name\" x=\"296\" y=\"55\">test</text>\
         <text class=\"detail\" x=\"296\" y=\"72\">12s · eagle-1</text></g></a></svg>"
    );
}

#[test]
fn boxes_are_250_apart_in_columns_and_62_in_rows() {
    let jobs = [
        job(1, "a", 0, None),
        job(2, "b", 0, None),
        job(3, "c", 4, None),
    ];
    let l = layout(&jobs);
    let at = |job: usize| l.boxes.iter().find(|b| b.job == job).map(|b| (b.x, b.y));
    assert_eq!(at(0), Some((16, 36)));
    assert_eq!(at(1), Some((16, 98)));
    // Stage index 4 with nothing in 1–3: the next column, not five over.
    assert_eq!(at(2), Some((266, 36)));
    assert!(l.edges.is_empty());
}

#[test]
fn text_is_escaped_and_long_names_are_cut() {
    let mut j = job(7, "<script>&\"'", 0, None);
    j.status = "fa\"il".into();
    j.stage = "b<uild".into();
    let long = job(8, "a-very-long-job-name-that-does-not-fit", 0, None);
    let svg = render_svg(&[j, long]);
    assert!(svg.contains("<title>&lt;script&gt;&amp;&quot;&#39;: fa&quot;il</title>"));
    assert!(svg.contains("data-status=\"fa&quot;il\""));
    assert!(svg.contains(">b&lt;uild</text>"));
    assert!(svg.contains(">a-very-long-job-name…</text>"));
    assert!(svg.contains("<title>a-very-long-job-name-that-does-not-fit: success</title>"));
    assert!(!svg.contains("<script"));
}

#[test]
fn only_known_needs_make_edges() {
    let jobs = [
        job(1, "build", 0, None),
        job(2, "lint", 1, None),
        job(3, "test", 1, Some(&["build", "nope", "build", "test"])),
        job(4, "none", 2, Some(&[])),
    ];
    let l = layout(&jobs);
    let pairs: Vec<(u64, u64)> = l.edges.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(pairs, vec![(1, 3)]);
}

#[test]
fn barycentre_orders_a_column_by_what_it_needs() {
    let jobs = [
        job(1, "a", 0, None),
        job(2, "b", 0, None),
        job(3, "c", 0, None),
        job(4, "needs-c", 1, Some(&["c"])),
        job(5, "needs-a", 1, Some(&["a"])),
        job(6, "free", 1, None),
        job(7, "needs-a-too", 1, Some(&["a", "a"])),
    ];
    let l = layout(&jobs);
    let column: Vec<u64> = l
        .boxes
        .iter()
        .filter(|b| b.x > 100)
        .map(|b| jobs[b.job].id)
        .collect();
    // Keys: needs-c 2, needs-a 0, free its own row 2, needs-a-too 0.
    assert_eq!(column, vec![5, 7, 4, 6]);
}

#[test]
fn the_same_jobs_give_the_same_bytes() {
    let jobs = sample_pipeline();
    assert_eq!(render_svg(&jobs), render_svg(&jobs));
}

fn sample_pipeline() -> Vec<GraphJob> {
    vec![
        job(1, "compile", 0, None),
        job(2, "compile-arm64", 0, None),
        job(3, "assets", 0, None),
        job(4, "unit", 1, Some(&["compile"])),
        job(5, "lint", 1, None),
        job(6, "integration", 1, Some(&["compile", "assets"])),
        job(7, "arm64-tests", 1, Some(&["compile-arm64"])),
        job(
            8,
            "package",
            2,
            Some(&["compile", "compile-arm64", "assets"]),
        ),
        job(9, "smoke", 2, Some(&["package", "unit"])),
        job(10, "deploy", 3, Some(&["package", "smoke", "assets"])),
        job(11, "notify", 3, Some(&["lint"])),
    ]
}

/// The golden file holds the SVG of [`sample_pipeline`]; regenerate it with
/// `OSPREY_UPDATE_GOLDEN=1` after an intended change and look at it.
#[test]
fn golden_sample_pipeline() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/web-golden/graph-sample.svg"
    );
    let svg = render_svg(&sample_pipeline()) + "\n";
    if std::env::var_os("OSPREY_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &svg).expect("write the golden file");
    }
    let golden = std::fs::read_to_string(path).expect("read the golden file");
    assert_eq!(svg, golden, "the graph changed: see {path}");
}

/// A small deterministic generator (xorshift64*), so the property test is
/// seeded without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn random_pipeline(rng: &mut Rng) -> Vec<GraphJob> {
    let stages = 1 + rng.below(5);
    let count = 1 + rng.below(18);
    let mut jobs: Vec<GraphJob> = (0..count)
        .map(|i| {
            job(
                100 + i as u64,
                &format!("job{i}"),
                rng.below(stages) * 2,
                None,
            )
        })
        .collect();
    for job in &mut jobs {
        job.needs = match rng.below(4) {
            0 => None,
            _ => {
                let n = rng.below(5);
                // Any job, in any column (earlier, same, later), or unknown.
                Some(
                    (0..n)
                        .map(|_| format!("job{}", rng.below(count + 2)))
                        .collect(),
                )
            }
        };
    }
    jobs
}

fn segments(edge: &EdgePath) -> impl Iterator<Item = ((i32, i32), (i32, i32))> + '_ {
    edge.points.windows(2).map(|w| (w[0], w[1]))
}

/// Does the axis-aligned segment `a`–`b` touch the open interior of the box?
fn crosses_interior(a: (i32, i32), b: (i32, i32), job_box: &JobBox) -> bool {
    let (left, right) = (job_box.x, job_box.x + BOX_W);
    let (top, bottom) = (job_box.y, job_box.y + BOX_H);
    let (x1, x2) = (a.0.min(b.0), a.0.max(b.0));
    let (y1, y2) = (a.1.min(b.1), a.1.max(b.1));
    if y1 == y2 {
        top < y1 && y1 < bottom && x1.max(left) < x2.min(right)
    } else {
        left < x1 && x1 < right && y1.max(top) < y2.min(bottom)
    }
}

fn check_geometry(jobs: &[GraphJob], l: &Layout) {
    let box_of = |id: u64| {
        l.boxes
            .iter()
            .find(|b| jobs[b.job].id == id)
            .expect("every edge end is a box")
    };
    for edge in &l.edges {
        let (from, to) = (box_of(edge.from), box_of(edge.to));
        let first = edge.points[0];
        let last = edge.points[edge.points.len() - 1];
        assert_eq!(first.0, from.x + BOX_W, "{edge:?} leaves at the right edge");
        assert!(from.y < first.1 && first.1 < from.y + BOX_H, "{edge:?}");
        assert_eq!(last.0, to.x, "{edge:?} enters at the left edge");
        assert!(to.y < last.1 && last.1 < to.y + BOX_H, "{edge:?}");
        assert!(first.0 < edge.points[1].0, "{edge:?} leaves rightwards");
        assert!(
            edge.points[edge.points.len() - 2].0 < last.0,
            "{edge:?} enters rightwards"
        );
        for (a, b) in segments(edge) {
            assert!(a.0 == b.0 || a.1 == b.1, "{edge:?} is orthogonal");
            for job_box in &l.boxes {
                assert!(
                    !crosses_interior(a, b, job_box),
                    "{edge:?} crosses job {}",
                    jobs[job_box.job].id
                );
            }
        }
    }
    // No two edges on top of each other, except where they share the box
    // they leave or enter.
    for (i, e) in l.edges.iter().enumerate() {
        for f in &l.edges[i + 1..] {
            for (a, b) in segments(e) {
                for (c, d) in segments(f) {
                    let overlap = if a.0 == b.0 && c.0 == d.0 && a.0 == c.0 {
                        a.1.min(b.1).max(c.1.min(d.1)) < a.1.max(b.1).min(c.1.max(d.1))
                    } else if a.1 == b.1 && c.1 == d.1 && a.1 == c.1 {
                        a.0.min(b.0).max(c.0.min(d.0)) < a.0.max(b.0).min(c.0.max(d.0))
                    } else {
                        false
                    };
                    let shared = e.from == f.from || e.to == f.to;
                    assert!(!overlap || shared, "{e:?} lies on {f:?}");
                }
            }
        }
    }
    for job_box in &l.boxes {
        assert!(job_box.x + BOX_W <= l.width && job_box.y + BOX_H <= l.height);
    }
}

#[test]
fn edges_never_cross_boxes_or_each_other() {
    let mut rng = Rng(0x05b2_e7a1_c0de_f00d);
    let mut edges = 0;
    for _ in 0..400 {
        let jobs = random_pipeline(&mut rng);
        let l = layout(&jobs);
        assert_eq!(l.boxes.len(), jobs.len());
        edges += l.edges.len();
        check_geometry(&jobs, &l);
    }
    assert!(edges > 1000, "the generator makes edges ({edges})");
}

#[test]
fn edges_within_a_column_and_backwards_are_routed() {
    let jobs = [
        job(1, "a", 0, None),
        job(2, "b", 0, Some(&["a"])),
        job(3, "c", 1, Some(&["d"])),
        job(4, "d", 2, None),
        job(5, "e", 0, Some(&["a"])),
    ];
    let l = layout(&jobs);
    assert_eq!(l.edges.len(), 3);
    check_geometry(&jobs, &l);
}

#[test]
fn crowded_gaps_widen_so_lanes_stay_apart() {
    let mut jobs: Vec<GraphJob> = (0..12).map(|i| job(i, &format!("s{i}"), 0, None)).collect();
    let names: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    jobs.push(job(50, "t0", 1, Some(&all)));
    jobs.push(job(51, "t1", 1, Some(&all)));
    let l = layout(&jobs);
    check_geometry(&jobs, &l);
    let second = l.boxes.iter().find(|b| jobs[b.job].id == 50).map(|b| b.x);
    assert!(second > Some(16 + 250), "the gap widened: {second:?}");
}
