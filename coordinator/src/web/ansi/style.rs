//! The SGR state of the log renderer and its HTML form: which `ESC[…m`
//! parameters change what, the xterm 256-colour palette, and the opening
//! `<span>` tag of a style. The 16 base colours stay classes (`f0`–`f15`,
//! `g0`–`g15`) so the page's theme picks them; only the 256-colour cube and
//! truecolour, which have fixed values, become inline `style` colours.

use std::fmt::Write as _;

/// A colour as a log can set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Color {
    /// One of the 16 themed colours (8–15 are the bright ones).
    Base(u8),
    /// A fixed colour: the 256-colour cube and ramp, or truecolour.
    Rgb(u8, u8, u8),
}

/// The text attributes SGR can set; `Style::default()` is the terminal's
/// default, which renders without a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Style {
    pub bold: bool,
    pub faint: bool,
    pub italic: bool,
    pub underline: bool,
    pub fg: Option<Color>,
    pub bg: Option<Color>,
}

impl Style {
    pub fn is_default(&self) -> bool {
        *self == Style::default()
    }

    /// Applies one SGR sequence. `params` are vte's parameter groups: a
    /// group has more than one element when the log used the colon form
    /// (`38:2::R:G:B`), otherwise extended colours take the following groups
    /// (`38;5;N`). Unknown codes are ignored, as terminals do.
    pub fn apply_sgr(&mut self, params: &[&[u16]]) {
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        let mut i = 0;
        while i < params.len() {
            let group = params[i];
            i += 1;
            let code = group.first().copied().unwrap_or(0);
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.faint = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => {
                    self.bold = false;
                    self.faint = false;
                }
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some(Color::Base((code - 30) as u8)),
                90..=97 => self.fg = Some(Color::Base((code - 90 + 8) as u8)),
                40..=47 => self.bg = Some(Color::Base((code - 40) as u8)),
                100..=107 => self.bg = Some(Color::Base((code - 100 + 8) as u8)),
                39 => self.fg = None,
                49 => self.bg = None,
                38 | 48 => {
                    let colour = if group.len() > 1 {
                        extended_colon(&group[1..])
                    } else {
                        let (colour, used) = extended_semicolon(&params[i..]);
                        i += used;
                        colour
                    };
                    if let Some(colour) = colour {
                        if code == 38 {
                            self.fg = Some(colour);
                        } else {
                            self.bg = Some(colour);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The opening tag of this style's span (`None` for the default style).
    pub fn open_tag(&self) -> Option<String> {
        if self.is_default() {
            return None;
        }
        let mut classes: Vec<String> = Vec::new();
        let mut inline = String::new();
        for (on, class) in [
            (self.bold, "b"),
            (self.faint, "d"),
            (self.italic, "i"),
            (self.underline, "u"),
        ] {
            if on {
                classes.push(class.to_owned());
            }
        }
        for (colour, class, property) in [(self.fg, 'f', "color"), (self.bg, 'g', "background")] {
            match colour {
                Some(Color::Base(n)) => classes.push(format!("{class}{n}")),
                Some(Color::Rgb(r, g, b)) => {
                    if !inline.is_empty() {
                        inline.push(';');
                    }
                    let _ = write!(inline, "{property}:#{r:02x}{g:02x}{b:02x}");
                }
                None => {}
            }
        }
        let mut tag = String::from("<span");
        if !classes.is_empty() {
            let _ = write!(tag, " class=\"{}\"", classes.join(" "));
        }
        if !inline.is_empty() {
            let _ = write!(tag, " style=\"{inline}\"");
        }
        tag.push('>');
        Some(tag)
    }
}

/// `5;N` or `2;R;G;B` in separate groups; returns the colour and how many
/// groups it used (all that were there when the sequence is cut short).
fn extended_semicolon(rest: &[&[u16]]) -> (Option<Color>, usize) {
    let value = |k: usize| rest.get(k).and_then(|g| g.first()).copied();
    match value(0) {
        Some(5) => match value(1) {
            Some(n) => (palette_256(n), 2),
            None => (None, rest.len()),
        },
        Some(2) => match (value(1), value(2), value(3)) {
            (Some(r), Some(g), Some(b)) => (rgb(r, g, b), 4),
            _ => (None, rest.len()),
        },
        Some(_) => (None, 1),
        None => (None, 0),
    }
}

/// `5:N`, `2:R:G:B` or `2:CS:R:G:B` (with a colour-space id) as subparameters.
fn extended_colon(sub: &[u16]) -> Option<Color> {
    match sub {
        [5, n, ..] => palette_256(*n),
        [2, _, r, g, b, ..] => rgb(*r, *g, *b),
        [2, r, g, b] => rgb(*r, *g, *b),
        _ => None,
    }
}

fn rgb(r: u16, g: u16, b: u16) -> Option<Color> {
    Some(Color::Rgb(
        u8::try_from(r).ok()?,
        u8::try_from(g).ok()?,
        u8::try_from(b).ok()?,
    ))
}

/// The xterm 256-colour palette: 0–15 are the themed colours, 16–231 a
/// 6×6×6 cube, 232–255 a grey ramp. Out-of-range indexes are ignored.
pub(super) fn palette_256(n: u16) -> Option<Color> {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    match n {
        0..=15 => Some(Color::Base(n as u8)),
        16..=231 => {
            let k = (n - 16) as usize;
            Some(Color::Rgb(
                LEVELS[k / 36],
                LEVELS[(k / 6) % 6],
                LEVELS[k % 6],
            ))
        }
        232..=255 => {
            let grey = 8 + 10 * (n - 232) as u8;
            Some(Color::Rgb(grey, grey, grey))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(style: &mut Style, groups: &[&[u16]]) {
        style.apply_sgr(groups);
    }

    #[test]
    fn palette_corners() {
        assert_eq!(palette_256(16), Some(Color::Rgb(0, 0, 0)));
        assert_eq!(palette_256(196), Some(Color::Rgb(255, 0, 0)));
        assert_eq!(palette_256(231), Some(Color::Rgb(255, 255, 255)));
        assert_eq!(palette_256(232), Some(Color::Rgb(8, 8, 8)));
        assert_eq!(palette_256(255), Some(Color::Rgb(238, 238, 238)));
        assert_eq!(palette_256(9), Some(Color::Base(9)));
        assert_eq!(palette_256(256), None);
    }

    #[test]
    fn colon_and_semicolon_forms_agree() {
        let mut a = Style::default();
        apply(&mut a, &[&[38], &[2], &[1], &[2], &[3]]);
        let mut b = Style::default();
        apply(&mut b, &[&[38, 2, 0, 1, 2, 3]]);
        let mut c = Style::default();
        apply(&mut c, &[&[38, 2, 1, 2, 3]]);
        assert_eq!(a.fg, Some(Color::Rgb(1, 2, 3)));
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn codes_after_an_extended_colour_still_apply() {
        let mut s = Style::default();
        apply(&mut s, &[&[48], &[5], &[21], &[1]]);
        assert_eq!(s.bg, Some(Color::Rgb(0, 0, 255)));
        assert!(s.bold);
    }

    #[test]
    fn truncated_and_out_of_range_colours_are_ignored() {
        let mut s = Style::default();
        apply(&mut s, &[&[38], &[2], &[300], &[0], &[0]]);
        apply(&mut s, &[&[38], &[5]]);
        assert!(s.is_default());
    }

    #[test]
    fn open_tag_lists_classes_then_inline_colours() {
        let mut s = Style::default();
        apply(
            &mut s,
            &[&[1], &[4], &[31], &[48], &[2], &[0], &[128], &[255]],
        );
        assert_eq!(
            s.open_tag().as_deref(),
            Some("<span class=\"b u f1\" style=\"background:#0080ff\">")
        );
        apply(&mut s, &[&[22], &[24], &[39], &[38], &[5], &[208]]);
        assert_eq!(
            s.open_tag().as_deref(),
            Some("<span style=\"color:#ff8700;background:#0080ff\">")
        );
        apply(&mut s, &[&[0]]);
        assert_eq!(s.open_tag(), None);
    }
}
