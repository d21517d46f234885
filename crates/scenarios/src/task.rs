//! Task Markdown (`tasks/NN-name.md`): the H1 title, the H2 sections (description,
//! background, objectives, step-by-step guide, hints, validation criteria, solution) and the
//! hints inside `<details>`/`<summary>` blocks, read with a Markdown parser. The raw Markdown
//! is kept so a frontend can render it as written.

use std::ops::Range;
use std::path::PathBuf;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::Serialize;

use crate::error::{LoadError, Pos, SourceLocation, Warning};
use crate::rules::Rule;

/// One task of a scenario, with its validation rules.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `task-N`, N being the number in the file name.
    pub id: String,
    pub number: u32,
    pub title: String,
    /// Description section, or the text between the title and the first section.
    pub description: Option<String>,
    pub background: Option<String>,
    pub objectives: Vec<String>,
    pub steps: Vec<String>,
    pub hints: Vec<Hint>,
    pub validation_criteria: Vec<String>,
    pub solution: Option<String>,
    /// Every H2 section in order, including ones not recognised above.
    pub sections: Vec<Section>,
    /// The whole file.
    pub markdown: String,
    pub rules: Vec<Rule>,
    pub file: PathBuf,
    pub validation_file: PathBuf,
}

/// An H2 section of a task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    pub heading: String,
    pub kind: SectionKind,
    /// The section body (without its heading) as Markdown.
    pub markdown: String,
    pub line: u64,
}

/// The sections the reference format knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SectionKind {
    Description,
    Background,
    Objectives,
    StepByStepGuide,
    Hints,
    ValidationCriteria,
    Solution,
    Other,
}

impl SectionKind {
    fn classify(heading: &str) -> Self {
        let h: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ')
            .collect();
        let h = h.trim();
        let starts = |prefixes: &[&str]| prefixes.iter().any(|p| h.starts_with(p));
        if starts(&["description", "overview", "scenario", "task"]) {
            SectionKind::Description
        } else if starts(&["background", "context"]) {
            SectionKind::Background
        } else if starts(&["objective", "goal"]) {
            SectionKind::Objectives
        } else if starts(&["step", "guide", "instructions"]) {
            SectionKind::StepByStepGuide
        } else if starts(&["hint"]) {
            SectionKind::Hints
        } else if starts(&["validation", "success criteria", "acceptance", "verification"]) {
            SectionKind::ValidationCriteria
        } else if starts(&["solution"]) {
            SectionKind::Solution
        } else {
            SectionKind::Other
        }
    }
}

/// A collapsible hint: the `<summary>` line and the Markdown body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hint {
    pub summary: String,
    pub body: String,
}

/// The Markdown part of a task, before rules are attached.
#[derive(Debug, Clone)]
pub(crate) struct ParsedTask {
    /// `None` without a `#` heading: the task is then called after its number.
    pub title: Option<String>,
    pub description: Option<String>,
    pub background: Option<String>,
    pub objectives: Vec<String>,
    pub steps: Vec<String>,
    pub hints: Vec<Hint>,
    pub validation_criteria: Vec<String>,
    pub solution: Option<String>,
    pub sections: Vec<Section>,
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Parses a task file. The only hard error is an empty `#` title; a file without one (as the
/// reference system allows) is titled after its number by the caller.
pub(crate) fn parse_task(
    file: &SourceLocation,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<ParsedTask, LoadError> {
    struct Heading {
        level: HeadingLevel,
        range: Range<usize>,
        text: String,
    }
    let mut headings: Vec<Heading> = Vec::new();
    let mut current: Option<Heading> = None;
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some(Heading {
                    level,
                    range,
                    text: String::new(),
                })
            }
            Event::End(TagEnd::Heading(_)) => headings.extend(current.take()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = current.as_mut() {
                    h.text.push_str(&t);
                }
            }
            _ => {}
        }
    }

    let mut h1s = headings.iter().filter(|h| h.level == HeadingLevel::H1);
    let title_heading = h1s.next();
    if title_heading.is_none() {
        warnings.push(Warning::new(
            file.with_pos(Pos::new(1, 1)),
            "task has no `# Title` heading; it is called `Task N` after its number",
        ));
    }
    if let Some(extra) = h1s.next() {
        warnings.push(Warning::new(
            file.with_pos(Pos::of_offset(text, extra.range.start)),
            "more than one `#` title; the first one is used",
        ));
    }
    let title = title_heading.map(|h| h.text.trim().to_owned());
    if let (Some(h), Some("")) = (title_heading, title.as_deref()) {
        return Err(LoadError::invalid(
            file.with_pos(Pos::of_offset(text, h.range.start)),
            "the task title is empty",
        ));
    }
    // Sections and the intro start after the title, or at the top without one.
    let title_start = title_heading.map_or(0, |h| h.range.start);
    let title_end = title_heading.map_or(0, |h| h.range.end);

    let h2s: Vec<&Heading> = headings
        .iter()
        .filter(|h| h.level == HeadingLevel::H2 && h.range.start >= title_start)
        .collect();
    let mut sections = Vec::new();
    for (i, h) in h2s.iter().enumerate() {
        let end = h2s.get(i + 1).map_or(text.len(), |n| n.range.start);
        let heading = h.text.trim().to_owned();
        sections.push(Section {
            kind: SectionKind::classify(&heading),
            heading,
            markdown: text[h.range.end..end].trim().to_owned(),
            line: Pos::of_offset(text, h.range.start).line,
        });
    }
    let intro_end = h2s.first().map_or(text.len(), |h| h.range.start);
    let intro = text[title_end.min(intro_end)..intro_end].trim();

    let first = |kind: SectionKind| sections.iter().find(|s| s.kind == kind);
    let body = |kind: SectionKind| first(kind).map(|s| s.markdown.clone()).filter(|s| !s.is_empty());
    let items = |kind: SectionKind| first(kind).map(|s| list_items(&s.markdown)).unwrap_or_default();

    let description =
        body(SectionKind::Description).or_else(|| (!intro.is_empty()).then(|| intro.to_owned()));
    if description.is_none() {
        warnings.push(Warning::new(
            file.with_pos(Pos::of_offset(text, title_start)),
            "task has no description (a `## Description` section or text under the title)",
        ));
    }
    let hints = first(SectionKind::Hints)
        .map(|s| parse_hints(&s.markdown))
        .unwrap_or_default();
    let title_at = file.with_pos(Pos::of_offset(text, title_start));
    if first(SectionKind::Objectives).is_none() {
        warnings.push(Warning::new(
            title_at.clone(),
            "task has no `## Objectives` section",
        ));
    }
    if hints.is_empty() {
        warnings.push(Warning::new(
            title_at,
            "task has no hints (`## Hints` with `<details><summary>` blocks)",
        ));
    }
    Ok(ParsedTask {
        title,
        description,
        background: body(SectionKind::Background),
        objectives: items(SectionKind::Objectives),
        steps: items(SectionKind::StepByStepGuide),
        hints,
        validation_criteria: items(SectionKind::ValidationCriteria),
        solution: body(SectionKind::Solution),
        sections,
    })
}

/// The items of the outermost lists in `md`, as Markdown without the list markers.
fn list_items(md: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut list_depth = 0usize;
    for (event, range) in Parser::new_ext(md, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::List(_)) => list_depth += 1,
            Event::End(TagEnd::List(_)) => list_depth = list_depth.saturating_sub(1),
            Event::Start(Tag::Item) if list_depth == 1 => items.push(strip_marker(&md[range])),
            _ => {}
        }
    }
    items
}

/// Removes the list marker from an item's source and the marker's indentation from its
/// continuation lines, so nested Markdown stays intact.
fn strip_marker(item: &str) -> String {
    let trimmed = item.trim_start();
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    let marker_len = if digits > 0 && matches!(trimmed[digits..].chars().next(), Some('.' | ')')) {
        digits + 1
    } else if matches!(trimmed.chars().next(), Some('-' | '*' | '+')) {
        1
    } else {
        0
    };
    let rest = &trimmed[marker_len..];
    let content = rest.trim_start_matches([' ', '\t']);
    let indent = item.len() - trimmed.len() + marker_len + (rest.len() - content.len());
    let mut lines = content.lines();
    let mut out = lines.next().unwrap_or("").trim_end().to_owned();
    for line in lines {
        out.push('\n');
        let strip = line.len() - line.trim_start_matches(' ').len();
        out.push_str(&line[strip.min(indent)..]);
    }
    out.trim_end().to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HtmlTag {
    DetailsOpen,
    DetailsClose,
    SummaryOpen,
    SummaryClose,
}

#[derive(Debug)]
enum Piece<'a> {
    Tag(HtmlTag),
    Text(&'a str),
}

/// Finds `<details>`, `</details>`, `<summary>` and `</summary>` (any case, with attributes)
/// in an HTML fragment, as (start, end, tag).
fn find_tags(html: &str) -> Vec<(usize, usize, HtmlTag)> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = lower[from..].find('<') {
        let start = from + rel;
        let rest = &lower[start + 1..];
        let (closing, name_start) = match rest.strip_prefix('/') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let tag = ["details", "summary"].into_iter().find(|n| {
            name_start.starts_with(n)
                && name_start[n.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == '>' || c.is_ascii_whitespace() || c == '/')
        });
        match (tag, lower[start..].find('>')) {
            (Some(name), Some(gt)) => {
                let kind = match (name, closing) {
                    ("details", false) => HtmlTag::DetailsOpen,
                    ("details", true) => HtmlTag::DetailsClose,
                    ("summary", false) => HtmlTag::SummaryOpen,
                    _ => HtmlTag::SummaryClose,
                };
                found.push((start, start + gt + 1, kind));
                from = start + gt + 1;
            }
            _ => from = start + 1,
        }
    }
    found
}

/// Hints written as `### Title` subsections, each with the text up to the next heading.
fn hints_by_heading(md: &str) -> Vec<Hint> {
    let mut heads: Vec<(Range<usize>, String)> = Vec::new();
    let mut current: Option<(Range<usize>, String)> = None;
    for (event, range) in Parser::new_ext(md, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => current = Some((range, String::new())),
            Event::End(TagEnd::Heading(_)) => heads.extend(current.take()),
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&t);
                }
            }
            _ => {}
        }
    }
    heads
        .iter()
        .enumerate()
        .map(|(i, (range, title))| {
            let end = heads.get(i + 1).map_or(md.len(), |(next, _)| next.start);
            Hint {
                summary: title.trim().to_owned(),
                body: md[range.end..end].trim().to_owned(),
            }
        })
        .collect()
}

/// Hints from `<details>` blocks. Authors get the order of `<details>`, `<summary>` and text
/// wrong, forget closing tags, or skip the HTML and write a list; all of these give hints.
fn parse_hints(md: &str) -> Vec<Hint> {
    // Cut the section into text and the four tags, using the Markdown parser to find where
    // HTML is (so tags inside code spans or code blocks are left alone).
    let mut pieces = Vec::new();
    let mut cursor = 0;
    for (event, range) in Parser::new_ext(md, options()).into_offset_iter() {
        if let Event::Html(_) | Event::InlineHtml(_) = event {
            for (s, e, tag) in find_tags(&md[range.clone()]) {
                let (s, e) = (range.start + s, range.start + e);
                if s >= cursor {
                    pieces.push(Piece::Text(&md[cursor..s]));
                    pieces.push(Piece::Tag(tag));
                    cursor = e;
                }
            }
        }
    }
    pieces.push(Piece::Text(&md[cursor..]));

    if !pieces.iter().any(|p| matches!(p, Piece::Tag(_))) {
        // No HTML at all: `### Title` subsections, else list items, else the whole section.
        let by_heading = hints_by_heading(md);
        if !by_heading.is_empty() {
            return by_heading;
        }
        let items = list_items(md);
        let bodies = if items.is_empty() && !md.trim().is_empty() {
            vec![md.trim().to_owned()]
        } else {
            items
        };
        return bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Hint {
                summary: format!("Hint {}", i + 1),
                body,
            })
            .collect();
    }

    #[derive(Default)]
    struct Open {
        summary: Option<String>,
        body: String,
    }
    let mut hints: Vec<(Option<String>, String)> = Vec::new();
    let mut open: Option<Open> = None;
    let mut in_summary = false;
    let mut summary_buf = String::new();
    let mut pending_summary: Option<String> = None;

    // Ends a summary; without its closing tag, the first line is the summary, the rest body.
    fn end_summary(buf: &mut String, closed: bool) -> (String, String) {
        let text = std::mem::take(buf);
        if closed {
            return (text.trim().to_owned(), String::new());
        }
        let text = text.trim();
        match text.split_once('\n') {
            Some((first, rest)) => (first.trim().to_owned(), rest.trim().to_owned()),
            None => (text.to_owned(), String::new()),
        }
    }
    fn place_summary(
        summary: String,
        open: &mut Option<Open>,
        hints: &mut [(Option<String>, String)],
        pending: &mut Option<String>,
    ) {
        if summary.is_empty() {
            return;
        }
        if let Some(o) = open.as_mut() {
            if o.summary.is_none() {
                o.summary = Some(summary);
                return;
            }
        } else if let Some(last) = hints.last_mut().filter(|h| h.0.is_none()) {
            // `<summary>` written after its `</details>`.
            last.0 = Some(summary);
            return;
        }
        *pending = Some(summary);
    }
    fn close(open: &mut Option<Open>, hints: &mut Vec<(Option<String>, String)>) {
        if let Some(o) = open.take() {
            hints.push((o.summary, o.body.trim().to_owned()));
        }
    }

    for piece in pieces {
        match piece {
            Piece::Tag(HtmlTag::DetailsOpen) => {
                if in_summary {
                    in_summary = false;
                    let (s, extra) = end_summary(&mut summary_buf, false);
                    place_summary(s, &mut open, &mut hints, &mut pending_summary);
                    if let Some(o) = open.as_mut() {
                        o.body.push_str(&extra);
                    }
                }
                close(&mut open, &mut hints);
                open = Some(Open {
                    summary: pending_summary.take(),
                    body: String::new(),
                });
            }
            Piece::Tag(HtmlTag::SummaryOpen) => {
                in_summary = true;
                summary_buf.clear();
            }
            Piece::Tag(HtmlTag::SummaryClose) => {
                if in_summary {
                    in_summary = false;
                    let (s, _) = end_summary(&mut summary_buf, true);
                    place_summary(s, &mut open, &mut hints, &mut pending_summary);
                }
            }
            Piece::Tag(HtmlTag::DetailsClose) => {
                if in_summary {
                    in_summary = false;
                    let (s, extra) = end_summary(&mut summary_buf, false);
                    place_summary(s, &mut open, &mut hints, &mut pending_summary);
                    if let Some(o) = open.as_mut() {
                        o.body.push_str(&extra);
                    }
                }
                close(&mut open, &mut hints);
            }
            Piece::Text(t) => {
                if in_summary {
                    summary_buf.push_str(t);
                } else if let Some(o) = open.as_mut() {
                    o.body.push_str(t);
                } else if !t.trim().is_empty()
                    && let Some(last) = hints.last_mut().filter(|h| h.1.is_empty())
                {
                    // Body written after a `<details><summary>..</summary></details>` line.
                    last.1 = t.trim().to_owned();
                }
            }
        }
    }
    if in_summary {
        let (s, extra) = end_summary(&mut summary_buf, false);
        place_summary(s, &mut open, &mut hints, &mut pending_summary);
        if let Some(o) = open.as_mut() {
            o.body.push_str(&extra);
        }
    }
    close(&mut open, &mut hints);
    if let Some(s) = pending_summary {
        hints.push((Some(s), String::new()));
    }
    hints
        .into_iter()
        .filter(|(s, b)| s.is_some() || !b.is_empty())
        .enumerate()
        .map(|(i, (summary, body))| Hint {
            summary: summary.unwrap_or_else(|| format!("Hint {}", i + 1)),
            body,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = r#"# Enforce Pod Security Standards
## Description
Configure Pod Security Admission in the test-pods namespace.
## Objectives
- Create namespace with pod-security labels
- Verify enforcement with test pod
  - nested detail
- Document security context requirements
## Step-by-Step Guide
1. Create namespace: `kubectl create namespace test-pods`
2. Label namespace: `kubectl label namespace test-pods pod-security.kubernetes.io/enforce=baseline`
## Hints
<details>
<summary>Check current labels</summary>
Use kubectl get namespace test-pods -o yaml to view current configuration.
</details>"#;

    fn parse(text: &str) -> ParsedTask {
        parse_task(&SourceLocation::file("t.md"), text, &mut Vec::new()).unwrap()
    }

    #[test]
    fn reference_task_parses() {
        let t = parse(REFERENCE);
        assert_eq!(t.title.as_deref(), Some("Enforce Pod Security Standards"));
        assert_eq!(
            t.description.as_deref(),
            Some("Configure Pod Security Admission in the test-pods namespace.")
        );
        assert_eq!(t.objectives.len(), 3);
        assert_eq!(
            t.objectives[1],
            "Verify enforcement with test pod\n- nested detail"
        );
        assert_eq!(
            t.steps[0],
            "Create namespace: `kubectl create namespace test-pods`"
        );
        assert_eq!(
            t.hints,
            vec![Hint {
                summary: "Check current labels".into(),
                body: "Use kubectl get namespace test-pods -o yaml to view current configuration.".into()
            }]
        );
        assert_eq!(t.sections.len(), 4);
        assert_eq!(t.sections[3].kind, SectionKind::Hints);
        assert_eq!(t.sections[3].line, 12);
    }

    #[test]
    fn hints_tolerate_misordered_and_unclosed_tags() {
        let md = "<summary>First</summary>\n<details>\n\nBody one\n\n</details>\n\n\
                  <details>\nBody two first\n<summary>Second</summary>\n</details>\n\n\
                  <details><summary>Third\nbody three\n</details>\n\n\
                  <details>\n<summary>Fourth</summary>\n\nbody four";
        let hints = parse_hints(md);
        let got: Vec<(&str, &str)> = hints
            .iter()
            .map(|h| (h.summary.as_str(), h.body.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("First", "Body one"),
                ("Second", "Body two first"),
                ("Third", "body three"),
                ("Fourth", "body four"),
            ]
        );
    }

    #[test]
    fn hints_without_html_come_from_list_items() {
        let hints = parse_hints("- look at the labels\n- `kubectl describe ns`\n");
        assert_eq!(hints.len(), 2);
        assert_eq!(hints[1].summary, "Hint 2");
        assert_eq!(hints[1].body, "`kubectl describe ns`");
    }

    #[test]
    fn hints_without_html_come_from_subheadings() {
        let hints = parse_hints("### Labels\nUse `kubectl label`.\n\n### Levels\n- baseline\n- restricted\n");
        assert_eq!(
            hints,
            vec![
                Hint {
                    summary: "Labels".into(),
                    body: "Use `kubectl label`.".into()
                },
                Hint {
                    summary: "Levels".into(),
                    body: "- baseline\n- restricted".into()
                },
            ]
        );
    }

    #[test]
    fn tags_inside_code_are_not_hints() {
        let hints = parse_hints("<details><summary>Real</summary>\n\nUse `<details>` in docs\n</details>\n");
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].body, "Use `<details>` in docs");
    }

    #[test]
    fn truncated_or_odd_input_never_panics() {
        let odd = "# T\n## Hints\n<details open><summary>a</summary>\n- x\n  1. y\n</details></details><summary>\n\
                   ## Objectives\n* ü\n  ü\n10) é\n";
        for text in [REFERENCE, odd] {
            for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
                let _ = parse_task(&SourceLocation::file("t.md"), &text[..end], &mut Vec::new());
                let _ = parse_hints(&text[end..]);
            }
        }
    }

    #[test]
    fn missing_title_is_a_warning_at_line_one() {
        let mut warnings = Vec::new();
        let t = parse_task(
            &SourceLocation::file("t.md"),
            "## Description\ntext\n",
            &mut warnings,
        )
        .unwrap();
        assert_eq!(t.title, None);
        assert_eq!(t.description.as_deref(), Some("text"));
        assert!(
            warnings
                .iter()
                .any(|w| w.to_string().contains("t.md:1:1") && w.to_string().contains("no `# Title`")),
            "{warnings:?}"
        );
        let e = parse_task(
            &SourceLocation::file("t.md"),
            "#\n## Description\nx\n",
            &mut Vec::new(),
        );
        assert!(e.unwrap_err().to_string().contains("title is empty"));
    }
}
