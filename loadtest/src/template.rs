//! Templated text: `"/users/{{seq}}?q={{users.name}}"`, compiled once and rendered per
//! iteration into a buffer the worker reuses (no allocation on the hot path).
//!
//! Expressions inside `{{ }}`:
//!
//! | expression | value |
//! |---|---|
//! | `seq` | the scenario's iteration number (0, 1, 2, … across all workers) |
//! | `vu` | the worker's number |
//! | `iter` | the worker's own iteration number |
//! | `uuid` | a random UUID (version 4) |
//! | `random A B` | a random integer in `A..=B` |
//! | `run-id` | the run id (`[run] run-id`) |
//! | `env.NAME` | the environment variable `NAME`, read once when the scenario loads |
//! | `FEEDER.COLUMN` | the column of the iteration's row of a CSV feeder |

use std::io::Write as _;
use std::sync::Arc;

use crate::error::Problem;

/// A CSV data feeder: a header row naming the columns, then rows.
#[derive(Debug)]
pub struct Feeder {
    /// Its name in the scenario.
    pub name: String,
    /// Column names from the header row.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
    /// Rows taken at random instead of in order.
    pub random: bool,
}

/// One part of a template.
#[derive(Clone, Debug)]
enum Part {
    Text(Vec<u8>),
    Seq,
    Vu,
    Iter,
    Uuid,
    Random(u64, u64),
    Field {
        feeder: usize,
        column: usize,
    },
    /// A value an earlier step of the iteration extracted (`{{var.NAME}}`).
    Var(Arc<str>),
}

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a template reads while rendering one iteration.
#[derive(Debug)]
pub struct Vars<'a> {
    /// Scenario-wide iteration number.
    pub seq: u64,
    /// Worker number.
    pub vu: u64,
    /// The worker's iteration number.
    pub iter: u64,
    /// Feeders, by index; the row of each is chosen from `seq` (or at random).
    pub feeders: &'a [Arc<Feeder>],
    /// What earlier steps of this iteration extracted, by name.
    pub extracted: &'a [(Arc<str>, Vec<u8>)],
    /// The `cookie` header this request carries (empty: none).
    pub cookie: &'a [u8],
}

impl Template {
    /// Compiles `text`. `feeders` resolves `name.column`; `run_id` fills `{{run-id}}`.
    ///
    /// # Errors
    ///
    /// An unclosed `{{`, an unknown expression, feeder or column, or a bad `random` range.
    pub fn compile(text: &str, feeders: &[Arc<Feeder>], run_id: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut literal = Vec::new();
        while let Some(open) = rest.find("{{") {
            literal.extend_from_slice(&rest.as_bytes()[..open]);
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {text:?}"))?;
            let expr = after[..close].trim();
            let words: Vec<&str> = expr.split_whitespace().collect();
            let part = match words.as_slice() {
                ["seq"] => Part::Seq,
                ["vu"] => Part::Vu,
                ["iter"] => Part::Iter,
                ["uuid"] => Part::Uuid,
                ["run-id"] => Part::Text(run_id.as_bytes().to_vec()),
                ["random", a, b] => {
                    let parse = |s: &str| {
                        s.parse::<u64>()
                            .map_err(|_| format!("`random {a} {b}`: {s:?} is not a whole number"))
                    };
                    let (a, b) = (parse(a)?, parse(b)?);
                    if a > b {
                        return Err(format!("`random {a} {b}`: the range is empty"));
                    }
                    Part::Random(a, b)
                }
                [one] if one.starts_with("var.") && one.len() > 4 => {
                    Part::Var(Arc::from(&one[4..]))
                }
                [one] if one.starts_with("env.") => {
                    let name = &one[4..];
                    let value = std::env::var(name)
                        .map_err(|_| format!("environment variable {name} is not set"))?;
                    Part::Text(value.into_bytes())
                }
                [one] if one.contains('.') => {
                    let Some((f, c)) = one.split_once('.') else {
                        return Err(format!("`{{{{{one}}}}}`: write {{{{FEEDER.COLUMN}}}}"));
                    };
                    let feeder = feeders.iter().position(|x| x.name == f).ok_or_else(|| {
                        format!("`{{{{{one}}}}}`: no feeder named {f:?} in [feeders]")
                    })?;
                    let column = feeders[feeder]
                        .columns
                        .iter()
                        .position(|x| x == c)
                        .ok_or_else(|| {
                            format!(
                                "`{{{{{one}}}}}`: feeder {f:?} has no column {c:?} (it has {})",
                                feeders[feeder].columns.join(", ")
                            )
                        })?;
                    Part::Field { feeder, column }
                }
                _ => {
                    return Err(format!(
                        "unknown template expression `{{{{{expr}}}}}`; known: seq, vu, iter, uuid, \
                         random A B, run-id, env.NAME, var.NAME, FEEDER.COLUMN"
                    ));
                }
            };
            if let Part::Text(t) = &part {
                literal.extend_from_slice(t);
            } else {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(part);
            }
            rest = &after[close + 2..];
        }
        literal.extend_from_slice(rest.as_bytes());
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The text, when the template has no expressions.
    pub fn as_static(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Appends the rendered text to `out`.
    pub fn render(&self, vars: &Vars<'_>, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Seq => write_u64(out, vars.seq),
                Part::Vu => write_u64(out, vars.vu),
                Part::Var(name) => {
                    if let Some((_, v)) = vars.extracted.iter().find(|(n, _)| n == name) {
                        out.extend_from_slice(v);
                    }
                }
                Part::Iter => write_u64(out, vars.iter),
                Part::Uuid => {
                    let mut bytes = [0u8; 16];
                    fastrand::fill(&mut bytes);
                    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
                    let mut buf = uuid::Uuid::encode_buffer();
                    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
                }
                Part::Random(a, b) => write_u64(out, fastrand::u64(*a..=*b)),
                Part::Field { feeder, column } => {
                    let f = &vars.feeders[*feeder];
                    if !f.rows.is_empty() {
                        let row = if f.random {
                            fastrand::usize(..f.rows.len())
                        } else {
                            (vars.seq % f.rows.len() as u64) as usize
                        };
                        out.extend_from_slice(f.rows[row][*column].as_bytes());
                    }
                }
            }
        }
    }

    /// The `{{var.NAME}}` names it reads.
    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(n) => Some(&**n),
            _ => None,
        })
    }

    /// Renders into a fresh vector (for values that must be owned, such as gRPC keys).
    pub fn render_vec(&self, vars: &Vars<'_>) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.render(vars, &mut v);
        v
    }
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    let _ = write!(out, "{n}");
}

/// Loads a CSV feeder: the first row names the columns.
///
/// # Errors
///
/// The file cannot be read, has no header row, or a row has the wrong number of fields.
pub(crate) fn load_feeder(
    name: &str,
    path: &std::path::Path,
    random: bool,
) -> Result<Feeder, Problem> {
    let broken = |e: csv::Error| Problem::caused_by(format!("{}: invalid CSV", path.display()), e);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| Problem::caused_by(format!("cannot read {}", path.display()), e))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(broken)?
        .iter()
        .map(str::to_owned)
        .collect();
    if columns.is_empty() {
        return Err(format!("{}: no header row naming the columns", path.display()).into());
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(broken)?;
        rows.push(record.iter().map(str::to_owned).collect());
    }
    if rows.is_empty() {
        return Err(format!("{}: the feeder has no rows", path.display()).into());
    }
    Ok(Feeder {
        name: name.to_owned(),
        columns,
        rows,
        random,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(feeders: &[Arc<Feeder>]) -> Vars<'_> {
        Vars {
            seq: 7,
            vu: 2,
            iter: 3,
            feeders,
            extracted: &[],
            cookie: &[],
        }
    }

    #[test]
    fn renders_every_expression() {
        let f = vec![Arc::new(Feeder {
            name: "users".into(),
            columns: vec!["id".into(), "name".into()],
            rows: vec![
                vec!["1".into(), "ann".into()],
                vec!["2".into(), "bob".into()],
            ],
            random: false,
        })];
        let t = Template::compile(
            "/u/{{seq}}/{{ vu }}/{{iter}}/{{users.name}}/{{random 5 5}}/{{run-id}}",
            &f,
            "r1",
        )
        .unwrap();
        let mut out = Vec::new();
        t.render(&vars(&f), &mut out);
        assert_eq!(out, b"/u/7/2/3/bob/5/r1");
        let u = Template::compile("{{uuid}}", &f, "")
            .unwrap()
            .render_vec(&vars(&f));
        assert_eq!(
            uuid::Uuid::parse_str(std::str::from_utf8(&u).unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(
            Template::compile("plain", &f, "").unwrap().as_static(),
            Some(&b"plain"[..])
        );
    }

    #[test]
    fn refuses_bad_expressions() {
        for (text, want) in [
            ("{{seq", "unclosed"),
            ("{{nope}}", "unknown template expression"),
            ("{{users.x}}", "no feeder named"),
            ("{{random 9 1}}", "empty"),
            ("{{random a 1}}", "not a whole number"),
            ("{{env.JUPITER_SURELY_UNSET_VAR}}", "not set"),
        ] {
            let e = Template::compile(text, &[], "").unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
