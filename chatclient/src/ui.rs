//! What the user sees and types: rendering of outputs (with or without
//! colour), the interactive line editor (rustyline: history, completion,
//! unechoed passwords, messages printed above the prompt) and the plain
//! line reader of scripted mode.

use std::borrow::Cow;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::mpsc as std_mpsc;

use anstyle::{AnsiColor, Style};
use protocol::{Chat, ChatTarget, Friend, Group, Presence};
use rustyline::completion::Completer;
use rustyline::config::Configurer;
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, CompletionType, Config, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

use crate::app::{Ask, Output, Profile};
use crate::command;
use crate::Event;

/// When to use colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal, `NO_COLOR` is unset and `TERM` is not `dumb`.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Decides for this process's environment.
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
                !no_color && !dumb && std::io::stdout().is_terminal()
            }
        }
    }
}

/// Colours on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    pub color: bool,
}

impl Palette {
    pub const PLAIN: Palette = Palette { color: false };

    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }
}

const TIME: Style = Style::new().dimmed();
const SENDER: Style = Style::new()
    .bold()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Cyan)));
const GROUP: Style = Style::new()
    .bold()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Magenta)));
const OK: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green)));
const WARN: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)));
const ERROR: Style = Style::new()
    .bold()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)));
const HEADING: Style = Style::new().bold();

/// Which stream a rendered output belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Makes text safe for one terminal line: control characters (newlines,
/// escapes) are shown escaped, so a message can neither span lines in the
/// scripted output nor drive the terminal. `--json` gives the exact text.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The time shown for a message: the sender's `time` string, else the
/// server's `ts` in local time.
pub fn chat_time(chat: &Chat) -> String {
    if !chat.time.trim().is_empty() {
        return sanitize(&chat.time).into_owned();
    }
    chat.ts
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "--".to_owned())
}

/// `[TIME] <sender id> <sender name>: <text>`, or with `#<group id> ` before
/// the sender for a group message.
pub fn render_chat(chat: &Chat, palette: Palette) -> String {
    let time = palette.paint(TIME, &format!("[{}]", chat_time(chat)));
    let sender = palette.paint(SENDER, &format!("{} {}", chat.from, sanitize(&chat.name)));
    let msg = sanitize(&chat.msg);
    match chat.target {
        ChatTarget::User(_) => format!("{time} {sender}: {msg}"),
        ChatTarget::Group(group) => {
            let group = palette.paint(GROUP, &format!("#{group}"));
            format!("{time} {group} {sender}: {msg}")
        }
    }
}

fn or_unknown(text: &str) -> Cow<'_, str> {
    if text.is_empty() {
        Cow::Borrowed("?")
    } else {
        sanitize(text)
    }
}

fn state(state: Presence, palette: Palette) -> String {
    match state {
        Presence::Online => palette.paint(OK, "online"),
        Presence::Offline => "offline".to_owned(),
    }
}

fn friend_lines(friends: &[Friend], interactive: bool, palette: Palette) -> Vec<String> {
    friends
        .iter()
        .map(|f| {
            if interactive {
                format!(
                    "{} {} {}",
                    f.id,
                    or_unknown(&f.name),
                    state(f.state, palette)
                )
            } else {
                format!(
                    "friend: {} {} {}",
                    f.id,
                    state(f.state, palette),
                    or_unknown(&f.name)
                )
            }
        })
        .collect()
}

fn group_lines(groups: &[Group], interactive: bool, palette: Palette) -> Vec<String> {
    let mut lines = Vec::new();
    for g in groups {
        let title = format!("#{} {}", g.id, or_unknown(&g.name));
        let desc = sanitize(&g.desc);
        if interactive {
            let title = palette.paint(GROUP, &title);
            lines.push(if desc.is_empty() {
                title
            } else {
                format!("{title}  {desc}")
            });
        } else {
            lines.push(format!("group: {title}: {desc}"));
        }
        for u in &g.users {
            let role = u.role.as_str();
            if interactive {
                lines.push(format!(
                    "    {} {} {} {}",
                    u.id,
                    or_unknown(&u.name),
                    state(u.state, palette),
                    role
                ));
            } else {
                lines.push(format!(
                    "member: #{} {} {} {} {}",
                    g.id,
                    u.id,
                    role,
                    state(u.state, palette),
                    or_unknown(&u.name)
                ));
            }
        }
    }
    lines
}

fn welcome(profile: &Profile, interactive: bool, palette: Palette) -> String {
    let mut lines = Vec::new();
    let name = sanitize(&profile.name);
    if interactive {
        let rule = "=".repeat(54);
        lines.push(rule.clone());
        lines.push(palette.paint(
            HEADING,
            &format!("current login user => id:{} name:{name}", profile.id),
        ));
        lines.push(format!("{:-^54}", "friend list"));
        lines.extend(friend_lines(&profile.friends, true, palette));
        lines.push(format!("{:-^54}", "group list"));
        lines.extend(group_lines(&profile.groups, true, palette));
        lines.push(rule);
        lines.push("type help for the commands".to_owned());
    } else {
        lines.push(format!("logged in: id {} {name}", profile.id));
        lines.extend(friend_lines(&profile.friends, false, palette));
        lines.extend(group_lines(&profile.groups, false, palette));
    }
    lines.join("\n")
}

/// A page of `history`: `history: ` before each message line (oldest
/// first), then how to see more.
fn history(of: ChatTarget, messages: &[Chat], more: bool, palette: Palette) -> String {
    let mut lines: Vec<String> = messages
        .iter()
        .map(|chat| format!("history: {}", render_chat(chat, palette)))
        .collect();
    let target = crate::app::target_text(of);
    lines.push(if more {
        format!("history: more before these: history:{target} again")
    } else if messages.is_empty() {
        format!("history: no messages with {target}")
    } else {
        format!("history: start of the conversation with {target}")
    });
    lines.join("\n")
}

fn help(palette: Palette) -> String {
    let width = command::COMMANDS
        .iter()
        .map(|(usage, _)| usage.len())
        .max()
        .unwrap_or(0);
    let mut lines = vec![palette.paint(HEADING, "commands:")];
    for (usage, what) in command::COMMANDS {
        lines.push(format!("  {usage:<width$}  {what}"));
    }
    lines.push("  (only the first colons split: a message may contain colons)".to_owned());
    lines.join("\n")
}

const MENU: &str =
    "========================\n1. login\n2. register\n3. quit\n========================";

/// Renders one output, or `None` when there is nothing to show in this mode.
/// The text has no trailing newline and may span several lines.
pub fn render(output: &Output, interactive: bool, palette: Palette) -> Option<(Stream, String)> {
    Some(match output {
        Output::Chat(chat) => (Stream::Stdout, render_chat(chat, palette)),
        Output::Raw(text) => (Stream::Stdout, text.clone()),
        Output::History { of, messages, more } => {
            (Stream::Stdout, history(*of, messages, *more, palette))
        }
        Output::Welcome(profile) => (Stream::Stdout, welcome(profile, interactive, palette)),
        Output::Friends(friends) => {
            let mut lines = friend_lines(friends, interactive, palette);
            if lines.is_empty() {
                lines.push(
                    if interactive {
                        "no friends yet"
                    } else {
                        "friends: none"
                    }
                    .into(),
                );
            }
            (Stream::Stdout, lines.join("\n"))
        }
        Output::Groups(groups) => {
            let mut lines = group_lines(groups, interactive, palette);
            if lines.is_empty() {
                lines.push(
                    if interactive {
                        "no groups yet"
                    } else {
                        "groups: none"
                    }
                    .into(),
                );
            }
            (Stream::Stdout, lines.join("\n"))
        }
        Output::Registered { id, name } => (
            Stream::Stdout,
            if interactive {
                palette.paint(
                    OK,
                    &format!(
                        "registered: id {id} (name {}); log in with this id",
                        sanitize(name)
                    ),
                )
            } else {
                format!("registered: id {id}")
            },
        ),
        Output::Menu if interactive => (Stream::Stdout, MENU.to_owned()),
        Output::Menu => return None,
        Output::Help => (Stream::Stdout, help(palette)),
        Output::Done(text) => (
            Stream::Stdout,
            if interactive {
                palette.paint(OK, &format!("✓ {}", sanitize(text)))
            } else {
                sanitize(text).into_owned()
            },
        ),
        Output::Warn(text) => (
            Stream::Stderr,
            if interactive {
                palette.paint(WARN, &format!("* {}", sanitize(text)))
            } else {
                format!("chatclient: {}", sanitize(text))
            },
        ),
        Output::Error(text) => (
            Stream::Stderr,
            palette.paint(ERROR, &format!("error: {}", sanitize(text))),
        ),
    })
}

/// The prompt for each kind of input line (interactive mode only).
pub fn prompt(ask: Ask) -> &'static str {
    match ask {
        Ask::Menu => "choice: ",
        Ask::UserId => "userid: ",
        Ask::UserName => "username: ",
        Ask::Password => "userpassword: ",
        Ask::Command => "> ",
    }
}

/// Where rendered text goes.
pub enum Sink {
    /// Plain writes to stdout and stderr, a flush after each line.
    Plain,
    /// Above the line being edited (interactive).
    Printer(Box<dyn ExternalPrinter + Send>),
}

impl Sink {
    pub fn emit(&mut self, stream: Stream, text: &str) {
        match self {
            Sink::Plain => {
                // A closed stdout or stderr must not kill the client.
                let _ = match stream {
                    Stream::Stdout => write_line(&mut std::io::stdout().lock(), text),
                    Stream::Stderr => write_line(&mut std::io::stderr().lock(), text),
                };
            }
            Sink::Printer(printer) => {
                let mut text = text.replace('\n', "\r\n");
                text.push_str("\r\n");
                if printer.print(text.clone()).is_err() {
                    let _ = write_line(&mut std::io::stdout().lock(), &text);
                }
            }
        }
    }
}

fn write_line(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Starts the thread that reads lines from a non-terminal stdin, one per
/// [`Ask`], and returns the sender for asks. Reading only when asked keeps
/// the dialog in step with the replies (a command is not read before the
/// login it depends on has succeeded).
pub fn spawn_script_input(events: mpsc::Sender<Event>) -> std_mpsc::Sender<Ask> {
    let (asks, asked) = std_mpsc::channel::<Ask>();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            while asked.recv().is_ok() {
                let mut line = Vec::new();
                let event = match stdin.lock().read_until(b'\n', &mut line) {
                    Ok(0) => Event::InputEof,
                    Ok(_) => Event::Input(String::from_utf8_lossy(&line).into_owned()),
                    Err(e) => {
                        tracing::debug!("stdin: {e}");
                        Event::InputEof
                    }
                };
                let eof = matches!(event, Event::InputEof);
                if events.blocking_send(event).is_err() || eof {
                    break;
                }
            }
        })
        .expect("spawning the stdin thread");
    asks
}

/// The rustyline helper: completes command words, masks passwords and
/// makes the prompt bold.
struct ClientHelper {
    masking: bool,
    color: bool,
    /// Terminal width when the current prompt started (0: unknown).
    cols: usize,
}

impl Completer for ClientHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let head = &line[..pos];
        if self.masking || head.contains([':', '：']) {
            return Ok((0, Vec::new()));
        }
        let start = head.len() - head.trim_start().len();
        let word = head.trim_start();
        let words = command::WORDS
            .iter()
            .filter(|w| w.starts_with(word))
            .map(|w| (*w).to_owned())
            .collect();
        Ok((start, words))
    }
}

impl Hinter for ClientHelper {
    type Hint = String;
}

impl Validator for ClientHelper {}

impl Highlighter for ClientHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.masking {
            // Nothing at all, not even one blank per character, so the length
            // stays hidden too (the cursor is hidden meanwhile). Only the rows
            // a line this long wraps onto are kept, as bare newlines, so that
            // the editor's idea of which row it is on stays true.
            Cow::Owned("\n".repeat(wrapped_rows(prompt(Ask::Password), line, self.cols)))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        if self.color {
            Cow::Owned(format!("{HEADING}{prompt}{HEADING:#}"))
        } else {
            Cow::Borrowed(prompt)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        self.masking && kind != CmdKind::MoveCursor
    }
}

impl Helper for ClientHelper {}

/// Rows below the first that `prompt` followed by `line` take on a terminal
/// `cols` wide, counted as rustyline counts them (text ending exactly at the
/// right margin gets its newline from rustyline itself).
fn wrapped_rows(prompt: &str, line: &str, cols: usize) -> usize {
    let (mut rows, mut col) = (0, 0);
    for c in prompt.chars().chain(line.chars()) {
        let width = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        col += width;
        if cols > 0 && col > cols {
            rows += 1;
            col = width;
        }
    }
    rows
}

/// Starts the interactive line editor on its own thread. Returns where to
/// print (above the prompt) and the sender for asks.
pub fn spawn_interactive_input(
    events: mpsc::Sender<Event>,
    color: bool,
) -> anyhow::Result<(Sink, std_mpsc::Sender<Ask>)> {
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(1000)?
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ClientHelper, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ClientHelper {
        masking: false,
        color,
        cols: 0,
    }));
    // Highlighting is what masks passwords, so it is always on; colours in
    // the prompt follow `color`.
    editor.set_color_mode(ColorMode::Forced);
    let sink = match editor.create_external_printer() {
        Ok(printer) => Sink::Printer(Box::new(printer)),
        Err(e) => {
            tracing::debug!("no external printer: {e}");
            Sink::Plain
        }
    };
    let (asks, asked) = std_mpsc::channel::<Ask>();
    std::thread::Builder::new()
        .name("editor".into())
        .spawn(move || {
            while let Ok(ask) = asked.recv() {
                let masking = ask == Ask::Password;
                let cols = editor.dimensions().map_or(0, |(cols, _)| usize::from(cols));
                if let Some(helper) = editor.helper_mut() {
                    helper.masking = masking;
                    helper.cols = cols;
                }
                let hidden = if masking {
                    editor.set_cursor_visibility(false).ok().flatten()
                } else {
                    None
                };
                let result = editor.readline(prompt(ask));
                drop(hidden);
                let event = match result {
                    Ok(line) => {
                        if ask == Ask::Command && !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        Event::Input(line)
                    }
                    Err(ReadlineError::Interrupted) => Event::Interrupt,
                    Err(ReadlineError::Eof) => Event::InputEof,
                    Err(e) => {
                        tracing::debug!("line editor: {e}");
                        Event::InputEof
                    }
                };
                let eof = matches!(event, Event::InputEof);
                if events.blocking_send(event).is_err() || eof {
                    break;
                }
            }
        })?;
    Ok((sink, asks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(target: ChatTarget, msg: &str) -> Chat {
        Chat {
            target,
            from: 15,
            name: "li si".into(),
            msg: msg.into(),
            time: "2024-05-01 10:00:00".into(),
            mid: Some(1),
            ts: Some(1),
            seq: None,
        }
    }

    #[test]
    fn chat_lines_in_the_scripted_format() {
        assert_eq!(
            render_chat(
                &chat(ChatTarget::User(13), "hello: 你好 😀 \"q\""),
                Palette::PLAIN
            ),
            "[2024-05-01 10:00:00] 15 li si: hello: 你好 😀 \"q\""
        );
        assert_eq!(
            render_chat(&chat(ChatTarget::Group(3), "hi all"), Palette::PLAIN),
            "[2024-05-01 10:00:00] #3 15 li si: hi all"
        );
    }

    #[test]
    fn control_characters_cannot_break_lines_or_drive_the_terminal() {
        assert_eq!(
            render_chat(
                &chat(ChatTarget::User(1), "a\nb\r\x1b[2Jc\u{7f}"),
                Palette::PLAIN
            ),
            "[2024-05-01 10:00:00] 15 li si: a\\nb\\r\\u{1b}[2Jc\\u{7f}"
        );
        assert_eq!(sanitize("plain 中文"), Cow::Borrowed("plain 中文"));
    }

    #[test]
    fn time_falls_back_to_the_server_timestamp() {
        let mut c = chat(ChatTarget::User(1), "x");
        c.time = String::new();
        c.ts = Some(0);
        let shown = chat_time(&c);
        assert!(shown.starts_with("19"), "{shown}");
        assert_eq!(shown.len(), "1970-01-01 00:00:00".len());
        c.ts = None;
        assert_eq!(chat_time(&c), "--");
    }

    #[test]
    fn colours_only_when_enabled() {
        let colored = render_chat(&chat(ChatTarget::Group(3), "x"), Palette { color: true });
        assert!(colored.contains('\x1b'));
        let (stream, text) = render(&Output::Error("boom".into()), false, Palette::PLAIN).unwrap();
        assert_eq!((stream, text.as_str()), (Stream::Stderr, "error: boom"));
    }

    #[test]
    fn scripted_login_summary_and_results() {
        // The LOGIN_ACK of the protocol's example, as an original server sends it.
        let frame = br#"{"msgid":2,"errno":0,"id":13,"name":"zhang san",
            "friends":["{\"id\":15,\"name\":\"li si\",\"state\":\"offline\"}"],
            "groups":["{\"id\":1,\"groupname\":\"g\",\"groupdesc\":\"d\",\"users\":[\"{\\\"id\\\":13,\\\"name\\\":\\\"zhang san\\\",\\\"state\\\":\\\"online\\\",\\\"role\\\":\\\"creator\\\"}\"]}"]}"#;
        let Ok(protocol::Incoming {
            frame: protocol::ServerFrame::Reply(protocol::Reply::LoginOk(ack)),
            ..
        }) = protocol::parse_server_frame(frame)
        else {
            panic!("not a LOGIN_ACK")
        };
        let profile = Profile {
            id: ack.id,
            name: ack.name,
            friends: ack.friends,
            groups: ack.groups,
        };
        let (_, text) = render(&Output::Welcome(profile), false, Palette::PLAIN).unwrap();
        assert_eq!(
            text,
            "logged in: id 13 zhang san\nfriend: 15 offline li si\ngroup: #1 g: d\n\
             member: #1 13 creator online zhang san"
        );
        let (stream, text) = render(
            &Output::Registered {
                id: 22,
                name: "n".into(),
            },
            false,
            Palette::PLAIN,
        )
        .unwrap();
        assert_eq!(
            (stream, text.as_str()),
            (Stream::Stdout, "registered: id 22")
        );
        assert_eq!(render(&Output::Menu, false, Palette::PLAIN), None);
        assert!(render(&Output::Menu, true, Palette::PLAIN)
            .unwrap()
            .1
            .contains("1. login"));
        assert!(render(&Output::Help, false, Palette::PLAIN)
            .unwrap()
            .1
            .contains("chat:friendid:message"));
    }
}
