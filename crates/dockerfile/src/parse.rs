//! A Dockerfile parsed (by the `parse-dockerfile` crate) into nbrt's own, owned form: each
//! instruction with its line and what it asks for, words still unexpanded.

use parse_dockerfile::{
    Command, Flag, HealthcheckArguments, Instruction as P, JsonOrStringArray, Source,
};

use crate::error::{DockerfileError, Result};
use crate::words::{join_continuations, split_words};

/// A command in exec form (a JSON array) or shell form (text run through the `SHELL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Exec(Vec<String>),
    Shell(String),
}

/// `--name[=value]`.
pub type Flags = Vec<(String, Option<String>)>;

#[derive(Debug, Clone)]
pub enum Op {
    From {
        image: String,
        alias: Option<String>,
        flags: Flags,
    },
    /// `ARG NAME[=default]…`: defaults unexpanded.
    Arg(Vec<(String, Option<String>)>),
    /// `ENV`/`LABEL` pairs, both sides unexpanded.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Run {
        flags: Flags,
        cmd: Cmd,
    },
    Cmd(Cmd),
    Entrypoint(Cmd),
    Copy {
        add: bool,
        flags: Flags,
        sources: Vec<String>,
        /// `COPY <<EOF /dest`: files written from the Dockerfile itself.
        heredocs: Vec<Heredoc>,
        dest: String,
    },
    User(String),
    Workdir(String),
    Shell(Vec<String>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    /// `None` is `HEALTHCHECK NONE`.
    Healthcheck {
        flags: Flags,
        cmd: Option<Cmd>,
    },
    /// The trigger's text, as the image config records it.
    Onbuild(String),
    Maintainer(String),
}

/// A heredoc source of COPY or ADD: a file named after its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Variables are expanded unless the delimiter was quoted.
    pub expand: bool,
}

/// One instruction of the Dockerfile.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// 1-based line of the instruction's keyword.
    pub line: usize,
    /// `RUN`, `COPY`, … (upper case).
    pub keyword: &'static str,
    /// The instruction's text on its first line, for messages and history.
    pub text: String,
    pub op: Op,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

/// For an unterminated heredoc the parser reports the end of the file: the line that opens
/// it says more.
fn heredoc_start(text: &str, message: &str) -> Option<usize> {
    let rest = message.split("here-document (").nth(1)?;
    let delim = rest.split(')').next()?;
    text.lines()
        .position(|l| {
            ["<<", "<<-"].iter().any(|p| {
                [
                    format!("{p}{delim}"),
                    format!("{p}\"{delim}\""),
                    format!("{p}'{delim}'"),
                ]
                .iter()
                .any(|w| l.contains(w.as_str()))
            })
        })
        .map(|i| i + 1)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn first_line(text: &str, offset: usize) -> String {
    let rest = &text[offset.min(text.len())..];
    rest.lines().next().unwrap_or_default().trim().to_string()
}

fn flags(fs: &[Flag<'_>]) -> Flags {
    fs.iter()
        .map(|f| {
            (
                f.name.value.to_string(),
                f.value.as_ref().map(|v| v.value.to_string()),
            )
        })
        .collect()
}

fn cmd(c: &Command<'_>, escape: char) -> Cmd {
    match c {
        Command::Exec(v) => Cmd::Exec(v.value.iter().map(|s| s.value.to_string()).collect()),
        Command::Shell(s) => Cmd::Shell(join_continuations(s.value, escape)),
        _ => Cmd::Shell(String::new()),
    }
}

/// `key=value` words (new form) or `KEY value` (old form), as moby's `parseNameVal`.
fn name_vals(
    rest: &str,
    keyword: &str,
    escape: char,
) -> std::result::Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let rest = rest.trim();
        let Some(i) = rest.find(char::is_whitespace) else {
            return Err(format!("{keyword} must have two arguments"));
        };
        return Ok(vec![(
            rest[..i].to_string(),
            rest[i..].trim_start().to_string(),
        )]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

/// Parse Dockerfile text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile> {
    let parsed = parse_dockerfile::parse(text).map_err(|e| {
        let message = e.to_string();
        DockerfileError::Parse {
            file: file.to_string(),
            line: heredoc_start(text, &message).unwrap_or_else(|| e.line()),
            message,
        }
    })?;
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map(|d| d.value.value)
        .unwrap_or('\\');
    let mut out = Vec::new();
    for inst in &parsed.instructions {
        out.push(convert(file, text, inst, escape)?);
    }
    Ok(Dockerfile {
        escape,
        instructions: out,
    })
}

fn convert(file: &str, text: &str, inst: &P<'_>, escape: char) -> Result<Instruction> {
    let (start, keyword): (usize, &'static str) = match inst {
        P::Add(i) => (i.add.span.start, "ADD"),
        P::Arg(i) => (i.arg.span.start, "ARG"),
        P::Cmd(i) => (i.cmd.span.start, "CMD"),
        P::Copy(i) => (i.copy.span.start, "COPY"),
        P::Entrypoint(i) => (i.entrypoint.span.start, "ENTRYPOINT"),
        P::Env(i) => (i.env.span.start, "ENV"),
        P::Expose(i) => (i.expose.span.start, "EXPOSE"),
        P::From(i) => (i.from.span.start, "FROM"),
        P::Healthcheck(i) => (i.healthcheck.span.start, "HEALTHCHECK"),
        P::Label(i) => (i.label.span.start, "LABEL"),
        P::Maintainer(i) => (i.maintainer.span.start, "MAINTAINER"),
        P::Onbuild(i) => (i.onbuild.span.start, "ONBUILD"),
        P::Run(i) => (i.run.span.start, "RUN"),
        P::Shell(i) => (i.shell.span.start, "SHELL"),
        P::Stopsignal(i) => (i.stopsignal.span.start, "STOPSIGNAL"),
        P::User(i) => (i.user.span.start, "USER"),
        P::Volume(i) => (i.volume.span.start, "VOLUME"),
        P::Workdir(i) => (i.workdir.span.start, "WORKDIR"),
        _ => {
            return Err(DockerfileError::Parse {
                file: file.to_string(),
                line: 0,
                message: "an instruction this version of nbrt does not know".into(),
            })
        }
    };
    let line = line_of(text, start);
    let text_line = first_line(text, start);
    let err = |message: String| DockerfileError::Instruction {
        file: file.to_string(),
        line,
        instruction: text_line.clone(),
        message,
    };
    let op = match inst {
        P::From(i) => Op::From {
            image: i.image.value.to_string(),
            alias: i.as_.as_ref().map(|(_, a)| a.value.to_string()),
            flags: flags(&i.options),
        },
        P::Arg(i) => Op::Arg(
            split_words(&i.arguments.value, escape)
                .into_iter()
                .map(|w| match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w, None),
                })
                .collect(),
        ),
        P::Env(i) => Op::Env(name_vals(&i.arguments.value, "ENV", escape).map_err(err)?),
        P::Label(i) => Op::Label(name_vals(&i.arguments.value, "LABEL", escape).map_err(err)?),
        P::Run(i) => {
            let cmd = if i.here_docs.is_empty() {
                cmd(&i.arguments, escape)
            } else {
                run_heredoc(text, i).map_err(err)?
            };
            Op::Run {
                flags: flags(&i.options),
                cmd,
            }
        }
        P::Cmd(i) => Op::Cmd(cmd(&i.arguments, escape)),
        P::Entrypoint(i) => Op::Entrypoint(cmd(&i.arguments, escape)),
        P::Copy(i) => {
            let (sources, heredocs) = sources(&i.src, &text_line).map_err(err)?;
            Op::Copy {
                add: false,
                flags: flags(&i.options),
                sources,
                heredocs,
                dest: i.dest.value.to_string(),
            }
        }
        P::Add(i) => {
            let (sources, heredocs) = sources(&i.src, &text_line).map_err(err)?;
            Op::Copy {
                add: true,
                flags: flags(&i.options),
                sources,
                heredocs,
                dest: i.dest.value.to_string(),
            }
        }
        P::User(i) => Op::User(i.arguments.value.to_string()),
        P::Workdir(i) => Op::Workdir(i.arguments.value.to_string()),
        P::Shell(i) => Op::Shell(i.arguments.iter().map(|s| s.value.to_string()).collect()),
        P::Expose(i) => Op::Expose(i.arguments.iter().map(|s| s.value.to_string()).collect()),
        P::Volume(i) => Op::Volume(match &i.arguments {
            JsonOrStringArray::Json(v) => v.value.iter().map(|s| s.value.to_string()).collect(),
            JsonOrStringArray::String(v) => v.iter().map(|s| s.value.to_string()).collect(),
        }),
        P::Stopsignal(i) => Op::StopSignal(i.arguments.value.to_string()),
        P::Healthcheck(i) => Op::Healthcheck {
            flags: flags(&i.options),
            cmd: match &i.arguments {
                HealthcheckArguments::Cmd { arguments, .. } => Some(cmd(arguments, escape)),
                _ => None,
            },
        },
        P::Onbuild(i) => {
            let after = &text[i.onbuild.span.end..];
            let mut trigger = String::new();
            for l in after.split('\n') {
                let t = l.trim_end_matches([' ', '\t', '\r']);
                match t.strip_suffix(escape) {
                    Some(body) => trigger.push_str(body),
                    None => {
                        trigger.push_str(t);
                        break;
                    }
                }
            }
            Op::Onbuild(trigger.trim().to_string())
        }
        P::Maintainer(i) => Op::Maintainer(i.name.value.to_string()),
        _ => {
            return Err(err(
                "an instruction this version of nbrt does not know".into()
            ))
        }
    };
    Ok(Instruction {
        line,
        keyword,
        text: text_line,
        op,
    })
}

/// A RUN with heredocs, as BuildKit runs it: a lone heredoc is the script the shell runs;
/// otherwise the first line and the heredocs (each with its delimiter) go to the shell as
/// they were written.
fn run_heredoc(
    text: &str,
    i: &parse_dockerfile::RunInstruction<'_>,
) -> std::result::Result<Cmd, String> {
    let Command::Shell(args) = &i.arguments else {
        return Err("a heredoc with an exec-form RUN".into());
    };
    if i.here_docs.len() == 1 && args.value.trim().is_empty() {
        let data = i.here_docs[0].value.to_string();
        if data.starts_with("#!") {
            return Err("heredoc scripts with a #! line are not supported yet".into());
        }
        return Ok(Cmd::Shell(data));
    }
    // `<<EOF bash`, `<<-"EOF" python3 -`: the first line after RUN and its flags.
    let first = text
        .get(i.run.span.end..args.span.end)
        .unwrap_or_default()
        .trim();
    let first = first
        .split_whitespace()
        .skip_while(|w| w.starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let names = heredoc_names(&first);
    if names.len() != i.here_docs.len() {
        return Err("heredocs this version of nbrt cannot read".into());
    }
    let mut full = first.clone();
    for (doc, name) in i.here_docs.iter().zip(&names) {
        full.push('\n');
        full.push_str(&doc.value);
        full.push_str(name);
    }
    Ok(Cmd::Shell(full))
}

/// The delimiters of the heredocs a line opens (`<<EOF`, `<<-"EOF"`), in order.
fn heredoc_names(first_line: &str) -> Vec<String> {
    first_line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("<<"))
        .map(|w| {
            w.trim_start_matches('-')
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string()
        })
        .collect()
}

/// COPY/ADD sources: paths (and URLs), and heredocs named by their delimiters.
fn sources(
    src: &[Source<'_>],
    first_line: &str,
) -> std::result::Result<(Vec<String>, Vec<Heredoc>), String> {
    let mut names = heredoc_names(first_line).into_iter();
    let mut paths = Vec::new();
    let mut docs = Vec::new();
    for s in src {
        match s {
            Source::Path(p) => paths.push(p.value.to_string()),
            Source::HereDoc(h) => docs.push(Heredoc {
                name: names
                    .next()
                    .ok_or("a heredoc whose delimiter is not on the instruction's line")?,
                content: h.value.to_string(),
                expand: h.expand,
            }),
            _ => return Err("a COPY source this version of nbrt cannot read".into()),
        }
    }
    Ok((paths, docs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_with_lines() {
        let text = "# syntax=docker/dockerfile:1\nARG BASE=x\nFROM ${BASE} AS build\n\
                    ENV A=1 B=\"two words\"\nENV OLD value with  spaces\n\
                    RUN echo one \\\n  # dropped\n  && echo two\nCMD [\"a\", \"b\"]\n\
                    COPY --chown=1:2 a b /dst/\nONBUILD RUN echo hi\n";
        let d = parse("Dockerfile", text).unwrap();
        let lines: Vec<usize> = d.instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 9, 10, 11]);
        match &d.instructions[2].op {
            Op::Env(p) => assert_eq!(
                p,
                &vec![
                    ("A".to_string(), "1".to_string()),
                    ("B".to_string(), "\"two words\"".to_string())
                ]
            ),
            o => panic!("{o:?}"),
        }
        match &d.instructions[3].op {
            Op::Env(p) => assert_eq!(p[0].1, "value with  spaces"),
            o => panic!("{o:?}"),
        }
        match &d.instructions[4].op {
            Op::Run { cmd, .. } => assert_eq!(cmd, &Cmd::Shell("echo one   && echo two".into())),
            o => panic!("{o:?}"),
        }
        match &d.instructions[6].op {
            Op::Copy {
                flags,
                sources,
                dest,
                add,
                ..
            } => {
                assert!(!add);
                assert_eq!(flags, &vec![("chown".to_string(), Some("1:2".to_string()))]);
                assert_eq!(sources, &vec!["a".to_string(), "b".to_string()]);
                assert_eq!(dest, "/dst/");
            }
            o => panic!("{o:?}"),
        }
        match &d.instructions[7].op {
            Op::Onbuild(t) => assert_eq!(t, "RUN echo hi"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn run_heredocs_as_buildkit_runs_them() {
        let run = |t: &str| match parse("Dockerfile", t).unwrap().instructions[1].op.clone() {
            Op::Run { cmd, .. } => cmd,
            o => panic!("{o:?}"),
        };
        assert_eq!(
            run("FROM x\nRUN <<EOF\necho a\n  echo b\nEOF\n"),
            Cmd::Shell("echo a\n  echo b\n".into())
        );
        assert_eq!(
            run("FROM x\nRUN --network=none <<EOF bash\nset -e\nEOF\n"),
            Cmd::Shell("<<EOF bash\nset -e\nEOF".into())
        );
        assert!(parse("Dockerfile", "FROM x\nRUN <<EOF\n#!/bin/sh\nEOF\n").is_err());
    }

    #[test]
    fn errors_have_lines() {
        let e = parse("Dockerfile", "FROM x\nRUN true\nFROBNICATE now\n").unwrap_err();
        assert!(e.to_string().starts_with("Dockerfile:3:"), "{e}");
        let e = parse("Dockerfile", "FROM x\nENV ONLYKEY\n").unwrap_err();
        assert!(e.to_string().starts_with("Dockerfile:2:"), "{e}");
    }
}
