//! The geometry of the pipeline graph: which job goes in which cell, where
//! the columns, rows and the gaps between them are, and the orthogonal route
//! of every `needs:` edge. Integer pixels, so the SVG is byte-for-byte
//! deterministic.
//!
//! Routing keeps edges out of boxes by construction: a vertical segment only
//! ever runs in a gap between columns, a horizontal one only in a channel
//! between rows, or as a stub inside a gap from a box's edge to a lane. Gaps
//! and channels grow when they need more lanes than fit, so every segment in
//! one gap (or channel) gets its own lane.

use std::collections::HashMap;

use super::GraphJob;

pub(super) const BOX_W: i32 = 190;
pub(super) const BOX_H: i32 = 46;
/// Height of the row of stage names above the boxes.
pub(super) const HEADER_H: i32 = 28;
/// Gap between two columns (boxes 250 px apart) unless more lanes need room.
const COLUMN_GAP: i32 = 60;
/// Gap between two rows (boxes 62 px apart) unless more lanes need room.
const ROW_GAP: i32 = 16;
/// The space left and right of the outer columns and below the last row.
const MARGIN: i32 = 16;
/// The space between the stage names and the first row.
const TOP_GAP: i32 = 8;
/// Distance between two lanes of a gap, and of a channel.
const LANE_X: i32 = 6;
const LANE_Y: i32 = 4;
/// Edges leave a box below its middle and enter one above it, so the stub
/// of an edge leaving a box never lies on the stub of one entering the box
/// beside it in the same gap.
const PORT_DY: i32 = 6;

/// A job's box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JobBox {
    /// Index into the jobs given to [`layout`].
    pub job: usize,
    pub x: i32,
    pub y: i32,
}

/// A stage name over its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StageHeader {
    pub name: String,
    pub x: i32,
}

/// An edge's route: axis-aligned segments between consecutive points, from
/// the needed job's right edge to the needing job's left edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EdgePath {
    pub from: u64,
    pub to: u64,
    pub points: Vec<(i32, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub width: i32,
    pub height: i32,
    pub stages: Vec<StageHeader>,
    pub boxes: Vec<JobBox>,
    pub edges: Vec<EdgePath>,
}

/// A cell of the grid: column (stage) and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    col: usize,
    row: usize,
}

/// How an edge gets from its source to its target, in grid terms.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// Neighbouring columns, same row: one straight line across the gap.
    Straight,
    /// Neighbouring columns: down or up one lane of the gap between them.
    Gap { lane: usize },
    /// Anywhere else: down a lane of the gap right of the source, along a
    /// lane of a channel between rows, down a lane of the gap left of the
    /// target.
    Channel {
        exit_lane: usize,
        channel: usize,
        channel_lane: usize,
        entry_lane: usize,
    },
}

struct Edge {
    from: usize,
    to: usize,
    route: Route,
}

pub(super) fn layout(jobs: &[GraphJob]) -> Layout {
    let (columns, stage_names) = columns(jobs);
    if columns.is_empty() {
        return Layout {
            width: 0,
            height: 0,
            stages: Vec::new(),
            boxes: Vec::new(),
            edges: Vec::new(),
        };
    }
    let needs = resolve_needs(jobs);
    let columns = order_rows(columns, &needs);
    let mut cell = vec![Cell { col: 0, row: 0 }; jobs.len()];
    for (col, members) in columns.iter().enumerate() {
        for (row, &job) in members.iter().enumerate() {
            cell[job] = Cell { col, row };
        }
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);

    // Grid edges, in an order that only depends on the grid.
    let mut pairs: Vec<(usize, usize)> = needs
        .iter()
        .enumerate()
        .flat_map(|(to, froms)| froms.iter().map(move |&from| (from, to)))
        .collect();
    pairs.sort_by_key(|&(from, to)| (cell[to].col, cell[to].row, cell[from].col, cell[from].row));

    // Lanes: gap g lies left of column g (gap `columns.len()` is right of
    // the last one); channel k lies above row k (channel `rows` below the
    // last one).
    let mut gap_lanes = vec![0usize; columns.len() + 1];
    let mut channel_lanes = vec![0usize; rows + 1];
    let take = |counter: &mut usize| {
        *counter += 1;
        *counter - 1
    };
    let mut edges: Vec<Edge> = pairs
        .into_iter()
        .map(|(from, to)| {
            let (s, t) = (cell[from], cell[to]);
            let route = if t.col == s.col + 1 && t.row == s.row {
                Route::Straight
            } else if t.col == s.col + 1 {
                Route::Gap {
                    lane: take(&mut gap_lanes[t.col]),
                }
            } else {
                let channel = if s.row > t.row { t.row + 1 } else { t.row };
                Route::Channel {
                    exit_lane: take(&mut gap_lanes[s.col + 1]),
                    channel,
                    channel_lane: take(&mut channel_lanes[channel]),
                    entry_lane: take(&mut gap_lanes[t.col]),
                }
            };
            Edge { from, to, route }
        })
        .collect();
    order_gap_lanes(&mut edges, &cell, gap_lanes.len());

    // Sizes: every gap and channel wide enough for its lanes.
    let gap_width: Vec<i32> = gap_lanes
        .iter()
        .enumerate()
        .map(|(g, &lanes)| {
            let base = if g == 0 || g == columns.len() {
                MARGIN
            } else {
                COLUMN_GAP
            };
            base.max(lanes_span(lanes, LANE_X))
        })
        .collect();
    let channel_height: Vec<i32> = channel_lanes
        .iter()
        .enumerate()
        .map(|(k, &lanes)| {
            let base = match k {
                0 => TOP_GAP,
                k if k == rows => MARGIN,
                _ => ROW_GAP,
            };
            base.max(lanes_span(lanes, LANE_Y))
        })
        .collect();
    let mut gap_x = Vec::with_capacity(gap_width.len());
    let mut x = 0;
    for &w in &gap_width {
        gap_x.push(x);
        x += w + BOX_W;
    }
    let width = x - BOX_W;
    let mut channel_y = Vec::with_capacity(channel_height.len());
    let mut y = HEADER_H;
    for &h in &channel_height {
        channel_y.push(y);
        y += h + BOX_H;
    }
    let height = y - BOX_H;
    let col_x = |col: usize| gap_x[col] + gap_width[col];
    let row_y = |row: usize| channel_y[row] + channel_height[row];
    let gap_lane_x = |gap: usize, lane: usize| {
        lane_position(gap_x[gap], gap_width[gap], gap_lanes[gap], lane, LANE_X)
    };
    let channel_lane_y = |channel: usize, lane: usize| {
        lane_position(
            channel_y[channel],
            channel_height[channel],
            channel_lanes[channel],
            lane,
            LANE_Y,
        )
    };

    let stages = stage_names
        .into_iter()
        .enumerate()
        .map(|(col, name)| StageHeader {
            name,
            x: col_x(col),
        })
        .collect();
    let boxes = columns
        .iter()
        .flatten()
        .map(|&job| JobBox {
            job,
            x: col_x(cell[job].col),
            y: row_y(cell[job].row),
        })
        .collect();
    let edges = edges
        .iter()
        .map(|edge| {
            let (s, t) = (cell[edge.from], cell[edge.to]);
            let exit_x = col_x(s.col) + BOX_W;
            let entry_x = col_x(t.col);
            let middle = |row: usize| row_y(row) + BOX_H / 2;
            let exit = (exit_x, middle(s.row) + PORT_DY);
            let entry = (entry_x, middle(t.row) - PORT_DY);
            let points = match edge.route {
                Route::Straight => vec![(exit_x, middle(s.row)), (entry_x, middle(t.row))],
                Route::Gap { lane } => {
                    let x = gap_lane_x(t.col, lane);
                    vec![exit, (x, exit.1), (x, entry.1), entry]
                }
                Route::Channel {
                    exit_lane,
                    channel,
                    channel_lane,
                    entry_lane,
                } => {
                    let x1 = gap_lane_x(s.col + 1, exit_lane);
                    let y = channel_lane_y(channel, channel_lane);
                    let x2 = gap_lane_x(t.col, entry_lane);
                    vec![exit, (x1, exit.1), (x1, y), (x2, y), (x2, entry.1), entry]
                }
            };
            EdgePath {
                from: jobs[edge.from].id,
                to: jobs[edge.to].id,
                points,
            }
        })
        .collect();
    Layout {
        width,
        height,
        stages,
        boxes,
        edges,
    }
}

/// Reorders the lanes of each gap (their number stays) to avoid needless
/// crossings. Every vertical segment is entered from the left at its start
/// and left to the right at its end (the channel ends aside), and then two
/// segments going down cross less when the one that starts lower is further
/// left, two going up when the one that starts higher is. Positions are in
/// half rows: row r is 2r+1, channel k (above row k) is 2k.
fn order_gap_lanes(edges: &mut [Edge], cell: &[Cell], gaps: usize) {
    /// (going up, start, end) in half rows, negated for downward segments.
    type LaneKey = (bool, i64, i64);
    // (gap, key, edge, is the entry segment of a channel route)
    let mut segments: Vec<(usize, LaneKey, usize, bool)> = Vec::new();
    let key = |from: usize, to: usize| {
        let (from, to) = (from as i64, to as i64);
        if to > from {
            (false, -from, -to)
        } else {
            (true, from, to)
        }
    };
    for (i, edge) in edges.iter().enumerate() {
        let (s, t) = (cell[edge.from], cell[edge.to]);
        match edge.route {
            Route::Straight => {}
            Route::Gap { .. } => {
                segments.push((t.col, key(2 * s.row + 1, 2 * t.row + 1), i, false))
            }
            Route::Channel { channel, .. } => {
                segments.push((s.col + 1, key(2 * s.row + 1, 2 * channel), i, false));
                segments.push((t.col, key(2 * channel, 2 * t.row + 1), i, true));
            }
        }
    }
    segments.sort();
    let mut next = vec![0usize; gaps];
    for (gap, _, i, entry) in segments {
        let lane = next[gap];
        next[gap] += 1;
        match &mut edges[i].route {
            Route::Straight => {}
            Route::Gap { lane: l } => *l = lane,
            Route::Channel {
                exit_lane,
                entry_lane,
                ..
            } => {
                if entry {
                    *entry_lane = lane;
                } else {
                    *exit_lane = lane;
                }
            }
        }
    }
}

/// The room `lanes` lanes need with a lane's spacing free on either side.
fn lanes_span(lanes: usize, spacing: i32) -> i32 {
    i32::try_from(lanes + 1)
        .unwrap_or(i32::MAX)
        .saturating_mul(spacing)
}

/// Lane `lane` of `lanes`, `spacing` apart and centred in `[start, start + size]`.
fn lane_position(start: i32, size: i32, lanes: usize, lane: usize, spacing: i32) -> i32 {
    let lanes = i32::try_from(lanes).unwrap_or(i32::MAX);
    let lane = i32::try_from(lane).unwrap_or(i32::MAX);
    start + (size - (lanes - 1) * spacing) / 2 + lane * spacing
}

/// Columns of job indexes in `stage_index` order (the given order inside a
/// column) and each column's stage name.
fn columns(jobs: &[GraphJob]) -> (Vec<Vec<usize>>, Vec<String>) {
    let mut indexes: Vec<usize> = jobs.iter().map(|job| job.stage_index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let mut columns = vec![Vec::new(); indexes.len()];
    let mut names = vec![None; indexes.len()];
    for (i, job) in jobs.iter().enumerate() {
        if let Ok(col) = indexes.binary_search(&job.stage_index) {
            columns[col].push(i);
            names[col].get_or_insert_with(|| job.stage.clone());
        }
    }
    (
        columns,
        names.into_iter().map(Option::unwrap_or_default).collect(),
    )
}

/// For each job, the indexes of the jobs it needs: names resolved within
/// `jobs` (the first job of a name wins), unknown names, duplicates and the
/// job itself left out.
fn resolve_needs(jobs: &[GraphJob]) -> Vec<Vec<usize>> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        by_name.entry(job.name.as_str()).or_insert(i);
    }
    jobs.iter()
        .enumerate()
        .map(|(i, job)| {
            let mut found: Vec<usize> = Vec::new();
            for name in job.needs.iter().flatten() {
                if let Some(&from) = by_name.get(name.as_str()) {
                    if from != i && !found.contains(&from) {
                        found.push(from);
                    }
                }
            }
            found
        })
        .collect()
}

/// One barycentre pass, left to right: a job's key is the mean row of the
/// jobs it needs in earlier columns (already ordered), or its own row when
/// it needs none there; a stable sort keeps ties in the given order.
fn order_rows(mut columns: Vec<Vec<usize>>, needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut placed: HashMap<usize, usize> = HashMap::new();
    for members in &mut columns {
        let mut keyed: Vec<(f64, usize)> = members
            .iter()
            .enumerate()
            .map(|(row, &job)| {
                let rows: Vec<usize> = needs[job]
                    .iter()
                    .filter_map(|from| placed.get(from).copied())
                    .collect();
                let key = if rows.is_empty() {
                    row as f64
                } else {
                    rows.iter().sum::<usize>() as f64 / rows.len() as f64
                };
                (key, job)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        *members = keyed.into_iter().map(|(_, job)| job).collect();
        for (row, &job) in members.iter().enumerate() {
            placed.insert(job, row);
        }
    }
    columns
}
