//! The client's state machine: menu, login, commands, replies, reconnects,
//! heartbeats and the end of input. No I/O: every method takes an event and
//! the current instant and returns the effects for the driver to carry out,
//! so the whole behaviour is unit-tested without sockets or terminals.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

use tokio::time::Instant;

use protocol::{
    Ack, AddFriend, AddGroup, Chat, ChatTarget, CreateGroup, Credential, Delivered, Errno, Failure,
    Friend, GoAway, Group, History, HistoryPage, Login, LoginAck, Logout, Member, MsgId, Notice,
    Presence, Register, Reply, Request, Role, SendChat, ServerFrame, Version,
};

use crate::cid::CidSource;
use crate::command::{self, Command};
use crate::inbox::Inbox;

/// The protocol level this client speaks: every request carries `"v":2`
/// and a numeric `rid`.
pub const VERSION: Version = Version::V2;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: bad usage (command line, or input ended mid-dialog).
pub const EXIT_USAGE: u8 = 1;
/// Exit code: cannot connect, or the connection was lost for good.
pub const EXIT_CONNECTION: u8 = 2;
/// Exit code: bad credentials, or the account is already logged in.
pub const EXIT_CREDENTIALS: u8 = 3;

/// How long to wait between LOGIN retries on errno 2 after a reconnect.
pub const RELOGIN_RETRY_STEP: Duration = Duration::from_secs(1);

/// How long shown messages wait before DELIVERED confirms them: one
/// DELIVERED covers everything shown meanwhile, at most 4 per second.
pub const DELIVERED_DELAY: Duration = Duration::from_millis(250);

/// Messages per `history` page.
pub const HISTORY_PAGE: u32 = 20;

/// What the driver needs to know to run the state machine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A person at a terminal (prompts, menu, colours) rather than a script.
    pub interactive: bool,
    /// Print received frames raw on stdout instead of formatted lines.
    pub json: bool,
    /// How long to keep receiving after the end of input (scripted mode).
    pub linger: Duration,
    pub ping_interval: Duration,
    /// A request with no reply for this long means the link is dead.
    pub reply_timeout: Duration,
    /// How long after a reconnect a LOGIN refused with errno 2 is retried.
    pub relogin_window: Duration,
    /// `--login ID`, with the password when one was given.
    pub auto_login: Option<(i64, Option<String>)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interactive: false,
            json: false,
            linger: Duration::from_secs(2),
            ping_interval: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(15),
            relogin_window: Duration::from_secs(10),
            auto_login: None,
        }
    }
}

/// Which line the input side should read next (and how to prompt for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Menu,
    UserId,
    UserName,
    /// Read without echo.
    Password,
    Command,
}

/// The logged-in user and what the server told us at login, kept up to
/// date with the results of later commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: i64,
    pub name: String,
    pub friends: Vec<Friend>,
    pub groups: Vec<Group>,
}

/// Something to show. Where it goes (stdout, stderr, above the prompt) and
/// how it looks is the UI's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A received chat message, live or stored while away.
    Chat(Chat),
    /// A received frame as it came (`--json`).
    Raw(String),
    /// A page of `history`, oldest first; `more`: older messages exist.
    History {
        of: ChatTarget,
        messages: Vec<Chat>,
        more: bool,
    },
    /// The summary after a login.
    Welcome(Profile),
    Friends(Vec<Friend>),
    Groups(Vec<Group>),
    Registered {
        id: i64,
        name: String,
    },
    Menu,
    Help,
    /// The good result of a command.
    Done(String),
    /// Connection news and other status.
    Warn(String),
    Error(String),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write one request, encoded for [`VERSION`] with this `rid`.
    Send {
        rid: u64,
        request: Request,
    },
    Show(Output),
    /// Read one more line of input.
    Ask(Ask),
    /// Close the connection (it is dead); the driver then reports
    /// [`App::on_disconnected`] and reconnects.
    Disconnect(String),
    /// Close the connection (the server is going away) and reconnect
    /// after `after`.
    Reconnect {
        reason: String,
        after: Duration,
    },
    Exit(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Menu,
    LoginId,
    LoginPassword {
        id: i64,
    },
    RegisterName,
    RegisterPassword {
        name: String,
    },
    /// LOGIN sent, or waiting for the connection to send it.
    LoggingIn,
    Registering,
    /// Logged in (or logging in again after a reconnect): reading commands.
    Commands,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    /// `token`: logging in with the session token rather than the password.
    Login {
        token: bool,
    },
    Register {
        name: String,
    },
    Logout,
    Chat {
        to: i64,
    },
    GroupChat {
        group: i64,
    },
    AddFriend {
        id: i64,
    },
    CreateGroup {
        name: String,
        desc: String,
    },
    AddGroup {
        id: i64,
    },
    History {
        of: ChatTarget,
    },
}

#[derive(Debug, Clone)]
struct PendingEntry {
    what: Pending,
    sent_at: Instant,
    /// What the user typed, to report it if the reply never comes.
    line: String,
    /// A chat send (with its `cid`), sent again if the connection is lost
    /// before its ACK: the server stores a repeated cid once.
    resend: Option<Request>,
}

/// Where `history` continues: the same command again shows older messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HistoryCursor {
    of: ChatTarget,
    /// The oldest `mid` shown.
    before: i64,
}

#[derive(Clone)]
struct Credentials {
    id: i64,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("password", &"***")
            .finish()
    }
}

/// The client state machine.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    phase: Phase,
    /// A line has been asked for and not yet delivered.
    asking: bool,
    connected: bool,
    /// When the current connection was made, if it replaced a lost one.
    reconnected_at: Option<Instant>,
    /// Who to log in as whenever a connection is made.
    creds: Option<Credentials>,
    profile: Option<Profile>,
    /// The current connection has a successful LOGIN.
    logged_in: bool,
    next_rid: u64,
    pending: BTreeMap<u64, PendingEntry>,
    next_ping: Option<Instant>,
    ping_sent: Option<Instant>,
    relogin_at: Option<Instant>,
    /// Scripted lines read while logging in again, sent once logged in.
    held: Vec<String>,
    /// End of input: exit at this instant.
    linger_until: Option<Instant>,
    /// The session token of the last LOGIN_ACK: logging in again with it
    /// sends no password (and costs the server no hashing).
    token: Option<String>,
    /// What was shown of the inbox (v2 servers number their pushes).
    inbox: Inbox,
    /// The server numbers its pushes (its LOGIN_ACK had `seq`): DELIVERED
    /// and `since` apply.
    inbox_tracked: bool,
    /// When to send the next DELIVERED.
    deliver_at: Option<Instant>,
    /// The PING right after LOGIN (rid) and the LOGIN_ACK's `seq`: its PONG
    /// comes after the whole backlog.
    sync: Option<(u64, i64)>,
    /// Chat sends not acknowledged when the connection was lost, sent again
    /// (same cid) after the next login.
    unsent: Vec<PendingEntry>,
    cids: CidSource,
    history: Option<HistoryCursor>,
    /// When the last frame arrived: a reply may wait behind a long backlog,
    /// so the reply timeout counts from the later of this and the request.
    last_frame_at: Option<Instant>,
}

/// A refused request as shown: the server's message (the errno's standard
/// one when it sent none) and the errno.
fn failure(failure: &Failure) -> String {
    format!("{} (errno {})", failure.message, failure.errno.number())
}

impl App {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            phase: Phase::Menu,
            asking: false,
            connected: false,
            reconnected_at: None,
            creds: None,
            profile: None,
            logged_in: false,
            next_rid: 1,
            pending: BTreeMap::new(),
            next_ping: None,
            ping_sent: None,
            relogin_at: None,
            held: Vec::new(),
            linger_until: None,
            token: None,
            inbox: Inbox::default(),
            inbox_tracked: false,
            deliver_at: None,
            sync: None,
            unsent: Vec::new(),
            cids: CidSource::default(),
            history: None,
            last_frame_at: None,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Logged in on the current connection.
    pub fn is_logged_in(&self) -> bool {
        self.logged_in
    }

    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// The first connection is up: show the menu, or log in for `--login`.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        self.connected = true;
        self.next_ping = Some(now + self.settings.ping_interval);
        let mut fx = Vec::new();
        match self.settings.auto_login.clone() {
            Some((id, Some(password))) => self.begin_login(id, password, now, &mut fx),
            Some((id, None)) => {
                self.phase = Phase::LoginPassword { id };
                self.ask(Ask::Password, &mut fx);
            }
            None => self.back_to_menu(&mut fx),
        }
        fx
    }

    /// The earliest instant at which [`App::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut times = vec![self.linger_until];
        if self.connected {
            times.push(self.next_ping);
            times.push(self.relogin_at);
            times.push(self.deliver_at);
            times.push(self.pending.values().map(|p| self.reply_deadline(p)).min());
        }
        times.into_iter().flatten().min()
    }

    // ----- input -------------------------------------------------------

    /// One line of input, answering the last [`Effect::Ask`].
    pub fn on_input(&mut self, line: &str, now: Instant) -> Vec<Effect> {
        self.asking = false;
        let line = line.trim_end_matches(['\n', '\r']);
        let mut fx = Vec::new();
        match self.phase.clone() {
            Phase::Menu => match line.trim() {
                "1" => {
                    self.phase = Phase::LoginId;
                    self.ask(Ask::UserId, &mut fx);
                }
                "2" => {
                    self.phase = Phase::RegisterName;
                    self.ask(Ask::UserName, &mut fx);
                }
                "3" => self.exit(EXIT_OK, &mut fx),
                "" if self.settings.interactive => self.ask(Ask::Menu, &mut fx),
                other => {
                    fx.push(error(format!(
                        "invalid input {other:?}: answer 1 (login), 2 (register) or 3 (quit)"
                    )));
                    self.back_to_menu(&mut fx);
                }
            },
            Phase::LoginId => match line.trim().parse::<i64>() {
                Ok(id) if id > 0 => {
                    self.phase = Phase::LoginPassword { id };
                    self.ask(Ask::Password, &mut fx);
                }
                _ => {
                    fx.push(error(format!(
                        "a user id is a positive number, not {:?}",
                        line.trim()
                    )));
                    self.back_to_menu(&mut fx);
                }
            },
            Phase::LoginPassword { id } => {
                if line.is_empty() {
                    fx.push(error("empty password: login cancelled".to_owned()));
                    if self.settings.interactive {
                        self.back_to_menu(&mut fx);
                    } else {
                        self.exit(EXIT_USAGE, &mut fx);
                    }
                } else {
                    self.begin_login(id, line.to_owned(), now, &mut fx);
                }
            }
            Phase::RegisterName => {
                let name = line.trim();
                if protocol::valid_name(name) {
                    self.phase = Phase::RegisterPassword {
                        name: name.to_owned(),
                    };
                    self.ask(Ask::Password, &mut fx);
                } else {
                    fx.push(error(format!(
                        "a user name has 1 to {} characters",
                        protocol::MAX_NAME_CHARS
                    )));
                    self.back_to_menu(&mut fx);
                }
            }
            Phase::RegisterPassword { name } => {
                if line.is_empty() || line.len() > protocol::MAX_PASSWORD_BYTES {
                    fx.push(error(format!(
                        "a password has 1 to {} bytes: registration cancelled",
                        protocol::MAX_PASSWORD_BYTES
                    )));
                    self.back_to_menu(&mut fx);
                } else if !self.connected {
                    fx.push(error(
                        "not connected to the server: registration not sent, try again".to_owned(),
                    ));
                    self.back_to_menu(&mut fx);
                } else {
                    self.phase = Phase::Registering;
                    let request = Request::Register(Register {
                        name: name.clone(),
                        password: line.to_owned(),
                    });
                    self.send(
                        request,
                        Pending::Register { name },
                        "register",
                        now,
                        &mut fx,
                    );
                }
            }
            Phase::Commands => {
                if !self.logged_in && !self.settings.interactive {
                    // A script's line read while logging in again: keep it for later.
                    self.held.push(line.to_owned());
                } else {
                    self.command(line, now, &mut fx);
                    if self.phase == Phase::Commands {
                        self.ask(Ask::Command, &mut fx);
                    }
                }
            }
            Phase::LoggingIn | Phase::Registering | Phase::Done => {}
        }
        fx
    }

    /// Ctrl-C at a prompt (interactive): leave the current dialog.
    pub fn on_interrupt(&mut self, _now: Instant) -> Vec<Effect> {
        self.asking = false;
        let mut fx = Vec::new();
        match self.phase {
            Phase::Menu => self.exit(EXIT_OK, &mut fx),
            Phase::Commands => {
                fx.push(Effect::Show(Output::Warn(
                    "(type quit or press Ctrl-D to leave)".to_owned(),
                )));
                self.ask(Ask::Command, &mut fx);
            }
            Phase::LoginId
            | Phase::LoginPassword { .. }
            | Phase::RegisterName
            | Phase::RegisterPassword { .. } => self.back_to_menu(&mut fx),
            Phase::LoggingIn | Phase::Registering | Phase::Done => {}
        }
        fx
    }

    /// End of input: interactive users leave at once; scripts keep
    /// receiving for the linger time, then leave.
    pub fn on_input_eof(&mut self, now: Instant) -> Vec<Effect> {
        self.asking = false;
        let mut fx = Vec::new();
        if self.settings.interactive {
            self.exit(EXIT_OK, &mut fx);
            return fx;
        }
        match self.phase {
            Phase::Menu if self.pending.is_empty() => self.finish(&mut fx),
            Phase::LoginId
            | Phase::LoginPassword { .. }
            | Phase::RegisterName
            | Phase::RegisterPassword { .. } => {
                fx.push(error(
                    "input ended in the middle of a login or registration".to_owned(),
                ));
                self.exit(EXIT_USAGE, &mut fx);
            }
            _ => {
                self.linger_until = Some(now + self.settings.linger);
                if self.settings.linger.is_zero() {
                    self.finish(&mut fx);
                }
            }
        }
        fx
    }

    fn command(&mut self, line: &str, now: Instant, fx: &mut Vec<Effect>) {
        let command = match command::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return,
            Err(e) => {
                fx.push(error(e.to_string()));
                return;
            }
        };
        let Some(profile) = self.profile.clone() else {
            return;
        };
        let me = Some(profile.id);
        match command {
            Command::Help => fx.push(Effect::Show(Output::Help)),
            Command::Friends => fx.push(Effect::Show(Output::Friends(profile.friends))),
            Command::Groups => fx.push(Effect::Show(Output::Groups(profile.groups))),
            Command::Quit => {
                if self.settings.interactive {
                    self.exit(EXIT_OK, fx);
                } else {
                    self.phase = Phase::Done;
                    fx.extend(self.on_input_eof(now));
                }
            }
            Command::Loginout => {
                if self.connected && self.logged_in {
                    // What was shown is confirmed before the session ends.
                    self.confirm_shown(fx);
                    let logout = Request::Logout(Logout { id: me });
                    self.send(logout, Pending::Logout, line, now, fx);
                } else {
                    fx.push(Effect::Show(Output::Done(
                        "logged out (locally: not connected)".to_owned(),
                    )));
                }
                self.report_unsent("not sent (logged out)", fx);
                self.forget_session();
                self.back_to_menu(fx);
            }
            other => {
                if !self.connected || !self.logged_in {
                    let why = if self.connected {
                        "still logging in again"
                    } else {
                        "not connected"
                    };
                    fx.push(error(format!("not sent ({why}): {line}")));
                    return;
                }
                let (request, what) = match other {
                    Command::Chat { to, msg } => {
                        let cid = self.cids.next_cid();
                        let request = chat(me, ChatTarget::User(to), msg, cid);
                        return self.send_chat(request, Pending::Chat { to }, line, now, fx);
                    }
                    Command::GroupChat { group, msg } => {
                        let cid = self.cids.next_cid();
                        let request = chat(me, ChatTarget::Group(group), msg, cid);
                        let what = Pending::GroupChat { group };
                        return self.send_chat(request, what, line, now, fx);
                    }
                    Command::History { of } => {
                        // The same conversation again: the page before the last one.
                        let before = self
                            .history
                            .filter(|cursor| cursor.of == of)
                            .map(|cursor| cursor.before);
                        let request = Request::History(History {
                            of,
                            before,
                            limit: HISTORY_PAGE,
                        });
                        (request, Pending::History { of })
                    }
                    Command::AddFriend { id } => (
                        Request::AddFriend(AddFriend { id: me, friend: id }),
                        Pending::AddFriend { id },
                    ),
                    Command::AddGroup { id } => (
                        Request::AddGroup(AddGroup { id: me, group: id }),
                        Pending::AddGroup { id },
                    ),
                    Command::CreateGroup { name, desc } => (
                        Request::CreateGroup(CreateGroup {
                            id: me,
                            name: name.clone(),
                            desc: desc.clone(),
                        }),
                        Pending::CreateGroup { name, desc },
                    ),
                    Command::Help
                    | Command::Friends
                    | Command::Groups
                    | Command::Quit
                    | Command::Loginout => return,
                };
                self.send(request, what, line, now, fx);
            }
        }
    }

    // ----- connection ----------------------------------------------------

    /// A new connection replaced a lost one: log in again if we were.
    pub fn on_connected(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.connected = true;
        self.reconnected_at = Some(now);
        self.next_ping = Some(now + self.settings.ping_interval);
        self.ping_sent = None;
        fx.push(Effect::Show(Output::Warn(
            "reconnected to the server".to_owned(),
        )));
        if let Some(creds) = self.creds.clone() {
            self.send_login(creds, now, &mut fx);
        }
        fx
    }

    /// The connection is gone. Reports every request whose fate is unknown.
    pub fn on_disconnected(&mut self, reason: &str, _now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.connected {
            return fx;
        }
        self.connected = false;
        self.logged_in = false;
        self.ping_sent = None;
        self.next_ping = None;
        self.relogin_at = None;
        self.deliver_at = None;
        self.sync = None;
        self.last_frame_at = None;
        fx.push(Effect::Show(Output::Warn(format!(
            "connection lost ({reason}); reconnecting"
        ))));
        for entry in std::mem::take(&mut self.pending).into_values() {
            match entry.what {
                Pending::Login { .. } | Pending::Logout => {}
                // Sent again after the next login, with the same cid.
                _ if entry.resend.is_some() => self.unsent.push(entry),
                // Nothing is lost: the user may ask again.
                Pending::History { .. } => {}
                Pending::Register { .. } => {
                    fx.push(error(
                        "registration: no reply before the connection was lost; \
                         the account may or may not have been created"
                            .to_owned(),
                    ));
                    if self.phase == Phase::Registering {
                        self.back_to_menu(&mut fx);
                    }
                }
                _ => fx.push(error(format!(
                    "not confirmed, the connection was lost: {}",
                    entry.line
                ))),
            }
        }
        fx
    }

    /// Reconnecting failed for good.
    pub fn on_reconnect_gave_up(&mut self, reason: &str) -> Vec<Effect> {
        let mut fx = vec![error(format!("could not reconnect: {reason}"))];
        self.report_held(&mut fx);
        self.exit(EXIT_CONNECTION, &mut fx);
        fx
    }

    /// Timers: heartbeat, reply timeouts, login retries, the end of lingering.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.linger_until.is_some_and(|t| now >= t) {
            self.finish(&mut fx);
            return fx;
        }
        if !self.connected {
            return fx;
        }
        let timeout = self.settings.reply_timeout;
        if self.pending.values().any(|p| now >= self.reply_deadline(p)) {
            fx.push(Effect::Disconnect(format!(
                "no reply from the server in {} s",
                timeout.as_secs_f64()
            )));
            return fx;
        }
        if self.next_ping.is_some_and(|t| now >= t) {
            if self.ping_sent.is_some() {
                fx.push(Effect::Disconnect(format!(
                    "no reply to a heartbeat in {} s",
                    self.settings.ping_interval.as_secs_f64()
                )));
                return fx;
            }
            let rid = self.rid();
            fx.push(Effect::Send {
                rid,
                request: Request::Ping,
            });
            self.ping_sent = Some(now);
            self.next_ping = Some(now + self.settings.ping_interval);
        }
        if self.relogin_at.is_some_and(|t| now >= t) {
            self.relogin_at = None;
            if let Some(creds) = self.creds.clone() {
                self.send_login(creds, now, &mut fx);
            }
        }
        if self.deliver_at.is_some_and(|t| now >= t) {
            self.deliver_at = None;
            self.confirm_shown(&mut fx);
        }
        fx
    }

    // ----- frames from the server ----------------------------------------

    /// One frame from the server. Bad frames are reported, never fatal.
    pub fn on_frame(&mut self, frame: &[u8], now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        // Any frame shows the link is alive.
        self.ping_sent = None;
        self.last_frame_at = Some(now);
        let parsed = protocol::parse_server_frame(frame);
        if let Ok(protocol::Incoming {
            frame: ServerFrame::Chat(chat),
            ..
        }) = &parsed
        {
            if !self.is_new(chat, now) {
                // Shown already (replayed after a reconnect): not again.
                return fx;
            }
        }
        if self.settings.json && parsed.is_ok() {
            fx.push(Effect::Show(Output::Raw(
                String::from_utf8_lossy(frame).trim().to_owned(),
            )));
        }
        match parsed {
            Err(e) => fx.push(Effect::Show(Output::Warn(format!(
                "ignored a bad frame from the server ({e}): {}",
                preview(frame)
            )))),
            Ok(incoming) => {
                let rid = incoming.rid_number();
                match incoming.frame {
                    ServerFrame::Chat(chat) => {
                        self.seen_online(&chat);
                        self.show(Output::Chat(chat), &mut fx);
                    }
                    ServerFrame::Reply(reply) => self.on_reply(rid, reply, now, &mut fx),
                    ServerFrame::GoAway(goaway) => self.on_goaway(&goaway, &mut fx),
                    ServerFrame::Notice(notice) => self.on_notice(notice, &mut fx),
                    ServerFrame::Other { msgid } => fx.push(Effect::Show(Output::Warn(format!(
                        "ignored a frame with unexpected msgid {msgid}"
                    )))),
                }
            }
        }
        fx
    }

    /// A reply goes to the request it answers; an error reply's type (LOGIN_ACK,
    /// REGISTER_ACK or ACK) tells which kind of request that was.
    fn on_reply(&mut self, rid: Option<u64>, reply: Reply, now: Instant, fx: &mut Vec<Effect>) {
        match reply {
            Reply::LoginOk(ack) => self.on_login_ack(rid, Ok(*ack), now, fx),
            Reply::RegisterOk { id } => self.on_register_ack(rid, Ok(id), fx),
            Reply::Done(ack) => self.on_ack(rid, Ok(ack), fx),
            Reply::Joined(group) => {
                // The group with its members: `groups` shows it whole.
                if let Some(p) = self.profile.as_mut() {
                    p.groups.retain(|g| g.id != group.id);
                    p.groups.push(*group);
                }
                self.on_ack(rid, Ok(Ack::default()), fx)
            }
            Reply::History(page) => self.on_history(rid, page, fx),
            Reply::Pong(_) => {
                if let Some((sync_rid, latest)) = self.sync {
                    if rid == Some(sync_rid) {
                        // The whole backlog has been pushed by now.
                        self.sync = None;
                        self.inbox.settle(latest);
                        self.schedule_delivered(now);
                    }
                }
            }
            Reply::Silent => {}
            Reply::Error(refused) => match refused.request {
                Some(MsgId::Login) => self.on_login_ack(rid, Err(refused), now, fx),
                Some(MsgId::Register) => self.on_register_ack(rid, Err(refused), fx),
                _ => self.on_ack(rid, Err(refused), fx),
            },
        }
    }

    fn take_pending(&mut self, rid: Option<u64>, kind: fn(&Pending) -> bool) -> Option<Pending> {
        let rid = rid
            .filter(|rid| self.pending.contains_key(rid))
            .or_else(|| {
                // A reply without our rid: match the oldest request of its kind.
                self.pending
                    .iter()
                    .find(|(_, p)| kind(&p.what))
                    .map(|(rid, _)| *rid)
            })?;
        self.pending.remove(&rid).map(|p| p.what)
    }

    fn on_login_ack(
        &mut self,
        rid: Option<u64>,
        result: Result<LoginAck, Failure>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(Pending::Login { token: with_token }) =
            self.take_pending(rid, |p| matches!(p, Pending::Login { .. }))
        else {
            fx.push(Effect::Show(Output::Warn(
                "ignored a login reply to no login of ours".to_owned(),
            )));
            return;
        };
        let Some(creds) = self.creds.clone() else {
            return;
        };
        let ack = match result {
            Ok(ack) => ack,
            Err(refused) if with_token && refused.errno == Errno::BadCredentials => {
                // Expired or revoked: the password, which we still have.
                self.token = None;
                fx.push(Effect::Show(Output::Warn(
                    "the session token was refused; logging in with the password".to_owned(),
                )));
                return self.send_login(creds, now, fx);
            }
            Err(refused) => return self.on_login_refused(&refused, now, fx),
        };
        let resumed = self.profile.is_some() && self.inbox_tracked;
        if let Some(token) = ack.token.clone() {
            self.token = Some(token);
        }
        self.inbox_tracked = ack.seq.is_some();
        if let Some(latest) = ack.seq {
            if !resumed {
                self.inbox.start_fresh(latest);
            }
            // The reply to this comes after every message of the backlog.
            let rid = self.rid();
            fx.push(Effect::Send {
                rid,
                request: Request::Ping,
            });
            self.sync = Some((rid, latest));
            // Shown before the reconnect, not confirmed yet.
            self.schedule_delivered(now);
        }
        let profile = Profile {
            // Ids are positive: 0 is a reply that carried none.
            id: if ack.id > 0 { ack.id } else { creds.id },
            name: ack.name,
            friends: ack.friends,
            groups: ack.groups,
        };
        self.profile = Some(profile.clone());
        self.logged_in = true;
        self.relogin_at = None;
        if ack.skipped > 0 {
            fx.push(Effect::Show(Output::Warn(format!(
                "{} unreadable entries in the friend, group and offline message lists \
                 were skipped",
                ack.skipped
            ))));
        }
        let first = self.phase == Phase::LoggingIn;
        if first {
            self.show(Output::Welcome(profile), fx);
        } else {
            fx.push(Effect::Show(Output::Warn(format!(
                "logged in again as {} {}",
                profile.id, profile.name
            ))));
        }
        for chat in ack.offline {
            if self.is_new(&chat, now) {
                self.show(Output::Chat(chat), fx);
            }
        }
        if first {
            self.phase = Phase::Commands;
            self.ask(Ask::Command, fx);
        } else {
            let unsent = std::mem::take(&mut self.unsent);
            if !unsent.is_empty() {
                fx.push(Effect::Show(Output::Warn(format!(
                    "sending again {} message(s) not confirmed before the connection was lost",
                    unsent.len()
                ))));
            }
            for entry in unsent {
                if let Some(request) = entry.resend.clone() {
                    self.send_chat(request, entry.what, &entry.line, now, fx);
                }
            }
            for line in std::mem::take(&mut self.held) {
                self.command(&line, now, fx);
            }
            if self.phase == Phase::Commands {
                self.ask(Ask::Command, fx);
            }
        }
    }

    fn on_login_refused(&mut self, refused: &Failure, now: Instant, fx: &mut Vec<Effect>) {
        let busy = refused.errno == Errno::AlreadyLoggedIn;
        let just_reconnected = self
            .reconnected_at
            .is_some_and(|t| now < t + self.settings.relogin_window);
        if busy && just_reconnected {
            fx.push(Effect::Show(Output::Warn(
                "the account is still logged in (the old session may still be closing); retrying"
                    .to_owned(),
            )));
            self.relogin_at = Some(now + RELOGIN_RETRY_STEP);
            return;
        }
        fx.push(error(format!("login failed: {}", failure(refused))));
        self.report_unsent("not sent", fx);
        self.forget_session();
        if self.settings.interactive {
            self.report_held(fx);
            self.back_to_menu(fx);
        } else {
            self.report_held(fx);
            let code = if matches!(
                refused.errno,
                Errno::BadCredentials | Errno::AlreadyLoggedIn
            ) {
                EXIT_CREDENTIALS
            } else {
                EXIT_CONNECTION
            };
            self.exit(code, fx);
        }
    }

    fn on_register_ack(
        &mut self,
        rid: Option<u64>,
        result: Result<i64, Failure>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(Pending::Register { name }) =
            self.take_pending(rid, |p| matches!(p, Pending::Register { .. }))
        else {
            fx.push(Effect::Show(Output::Warn(
                "ignored a registration reply to no registration of ours".to_owned(),
            )));
            return;
        };
        match result {
            Ok(id) => self.show(Output::Registered { id, name }, fx),
            Err(refused) => fx.push(error(format!("registration failed: {}", failure(&refused)))),
        }
        if self.phase == Phase::Registering {
            self.back_to_menu(fx);
        }
    }

    fn on_ack(&mut self, rid: Option<u64>, result: Result<Ack, Failure>, fx: &mut Vec<Effect>) {
        let what = rid.and_then(|rid| self.pending.remove(&rid));
        let Some(entry) = what else {
            if let Err(refused) = result {
                fx.push(error(format!("server error: {}", failure(&refused))));
            }
            return;
        };
        let ack = match result {
            Ok(ack) => ack,
            Err(refused) => {
                let what = match &entry.what {
                    Pending::Chat { to } => format!("chat to {to}"),
                    Pending::GroupChat { group } => format!("groupchat to group {group}"),
                    Pending::AddFriend { id } => format!("addfriend {id}"),
                    Pending::CreateGroup { name, .. } => format!("creategroup {name}"),
                    Pending::AddGroup { id } => format!("addgroup {id}"),
                    Pending::History { of } => format!("history {}", target_text(*of)),
                    Pending::Logout => "loginout".to_owned(),
                    Pending::Login { .. } => "login".to_owned(),
                    Pending::Register { .. } => "registration".to_owned(),
                };
                fx.push(error(format!("{what} failed: {}", failure(&refused))));
                return;
            }
        };
        let done = match entry.what {
            Pending::Chat { to } => format!("sent to {to}"),
            Pending::GroupChat { group } => format!("sent to group {group}"),
            Pending::AddFriend { id } => {
                if let Some(p) = self.profile.as_mut() {
                    if !p.friends.iter().any(|f| f.id == id) {
                        // Whether the new friend is online is not known: shown offline
                        // until a message from them arrives.
                        p.friends.push(Friend {
                            id,
                            name: String::new(),
                            state: Presence::Offline,
                        });
                    }
                }
                format!("friend added: id {id}")
            }
            Pending::CreateGroup { name, desc } => match ack.groupid {
                Some(gid) => {
                    if let Some(p) = self.profile.as_mut() {
                        let me = Member {
                            id: p.id,
                            name: p.name.clone(),
                            state: Presence::Online,
                            role: Role::Creator,
                        };
                        p.groups.push(Group {
                            id: gid,
                            name: name.clone(),
                            desc,
                            users: vec![me],
                        });
                    }
                    format!("created group: id {gid} {name}")
                }
                None => format!("created group {name} (the server sent no group id)"),
            },
            Pending::AddGroup { id } => {
                if let Some(p) = self.profile.as_mut() {
                    if !p.groups.iter().any(|g| g.id == id) {
                        p.groups.push(Group {
                            id,
                            name: String::new(),
                            desc: String::new(),
                            users: Vec::new(),
                        });
                    }
                }
                format!("joined group: id {id}")
            }
            Pending::Logout => "logged out".to_owned(),
            Pending::Login { .. } | Pending::Register { .. } | Pending::History { .. } => return,
        };
        self.show(Output::Done(done), fx);
    }

    fn on_history(&mut self, rid: Option<u64>, page: HistoryPage, fx: &mut Vec<Effect>) {
        let entry = rid.and_then(|rid| self.pending.remove(&rid));
        let Some(PendingEntry {
            what: Pending::History { of },
            ..
        }) = entry
        else {
            fx.push(Effect::Show(Output::Warn(
                "ignored a history page asked for by no command of ours".to_owned(),
            )));
            return;
        };
        // The next `history` of this conversation continues before the
        // oldest message shown; after the first message it starts again.
        self.history = match page.messages.last().and_then(|chat| chat.mid) {
            Some(before) if page.more => Some(HistoryCursor { of, before }),
            _ => None,
        };
        let mut messages = page.messages;
        messages.reverse();
        // `--json` has printed the page as it came.
        self.show(
            Output::History {
                of,
                messages,
                more: page.more,
            },
            fx,
        );
    }

    /// The server is about to close: confirm what was shown, then reconnect
    /// after a random delay within what it asked, so that its clients do
    /// not all come back at once.
    fn on_goaway(&mut self, goaway: &GoAway, fx: &mut Vec<Effect>) {
        if self.logged_in {
            self.confirm_shown(fx);
        }
        let after = Duration::from_millis(rand::thread_rng().gen_range(0..=goaway.retry_ms));
        fx.push(Effect::Show(Output::Warn(format!(
            "the server is going away ({}); reconnecting in {} ms",
            goaway.reason,
            after.as_millis()
        ))));
        fx.push(Effect::Reconnect {
            reason: format!("the server went away: {}", goaway.reason),
            after,
        });
    }

    /// A NOTICE keeps the lists that `friends` and `groups` show live. A
    /// new friend who did not ask is announced; the rest is silent.
    fn on_notice(&mut self, notice: Notice, fx: &mut Vec<Effect>) {
        let Some(profile) = self.profile.as_mut() else {
            return;
        };
        match notice {
            Notice::Presence { id, state } => {
                let members = profile.groups.iter_mut().flat_map(|g| g.users.iter_mut());
                for member in members.filter(|m| m.id == id) {
                    member.state = state;
                }
                for friend in profile.friends.iter_mut().filter(|f| f.id == id) {
                    friend.state = state;
                }
            }
            Notice::Friend(friend) => {
                match profile.friends.iter_mut().find(|f| f.id == friend.id) {
                    // Added by us: the ACK made a placeholder.
                    Some(known) => *known = friend,
                    None => {
                        let news = format!("{} (id {}) is now your friend", friend.name, friend.id);
                        profile.friends.push(friend);
                        self.show(Output::Done(news), fx);
                    }
                }
            }
            Notice::Member { groupid, member } => {
                if let Some(group) = profile.groups.iter_mut().find(|g| g.id == groupid) {
                    match group.users.iter_mut().find(|m| m.id == member.id) {
                        Some(known) => *known = member,
                        None => group.users.push(member),
                    }
                }
            }
        }
    }

    // ----- helpers --------------------------------------------------------

    /// A live message shows that its sender is online (NOTICEs say so too,
    /// but they are best effort), so the lists shown by `friends` and
    /// `groups` say so.
    fn seen_online(&mut self, chat: &Chat) {
        let Some(profile) = self.profile.as_mut() else {
            return;
        };
        let members = profile.groups.iter_mut().flat_map(|g| g.users.iter_mut());
        for member in members.filter(|m| m.id == chat.from) {
            member.state = Presence::Online;
        }
        for friend in profile.friends.iter_mut().filter(|f| f.id == chat.from) {
            friend.state = Presence::Online;
            if friend.name.is_empty() {
                friend.name.clone_from(&chat.name);
            }
        }
    }

    fn rid(&mut self) -> u64 {
        let rid = self.next_rid;
        self.next_rid += 1;
        rid
    }

    fn send(
        &mut self,
        request: Request,
        what: Pending,
        line: &str,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        self.send_entry(request, what, line, None, now, fx);
    }

    /// A chat send: kept to be sent again (same cid) if its ACK is lost.
    fn send_chat(
        &mut self,
        request: Request,
        what: Pending,
        line: &str,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let resend = Some(request.clone());
        self.send_entry(request, what, line, resend, now, fx);
    }

    fn send_entry(
        &mut self,
        request: Request,
        what: Pending,
        line: &str,
        resend: Option<Request>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let rid = self.rid();
        fx.push(Effect::Send { rid, request });
        self.pending.insert(
            rid,
            PendingEntry {
                what,
                sent_at: now,
                line: line.to_owned(),
                resend,
            },
        );
    }

    /// When a request is taken as unanswered: the reply timeout after it
    /// was sent or after the last frame, whichever is later (a reply comes
    /// after the backlog streamed at login, which may take a while to show).
    fn reply_deadline(&self, entry: &PendingEntry) -> Instant {
        let since = match self.last_frame_at {
            Some(t) if t > entry.sent_at => t,
            _ => entry.sent_at,
        };
        since + self.settings.reply_timeout
    }

    /// Whether a received message is to be shown: not if its `seq` was
    /// shown already. A new one counts as shown from here on (the effects
    /// that show it are carried out before any DELIVERED that follows).
    fn is_new(&mut self, chat: &Chat, now: Instant) -> bool {
        let Some(seq) = chat.seq else {
            return true;
        };
        if !self.inbox.accept(seq) {
            return false;
        }
        self.schedule_delivered(now);
        true
    }

    /// Arms the DELIVERED timer if something shown is not confirmed yet.
    fn schedule_delivered(&mut self, now: Instant) {
        if self.inbox_tracked && self.inbox.unconfirmed() && self.deliver_at.is_none() {
            self.deliver_at = Some(now + DELIVERED_DELAY);
        }
    }

    /// Sends DELIVERED for everything shown and not yet confirmed.
    fn confirm_shown(&mut self, fx: &mut Vec<Effect>) {
        if !(self.inbox_tracked && self.connected && self.logged_in) {
            return;
        }
        if let Some(seq) = self.inbox.take_confirmation() {
            let rid = self.rid();
            fx.push(Effect::Send {
                rid,
                request: Request::Delivered(Delivered { seq }),
            });
        }
        self.deliver_at = None;
    }

    /// Logged out or refused: nothing of this user's session is kept.
    fn forget_session(&mut self) {
        self.creds = None;
        self.profile = None;
        self.logged_in = false;
        self.relogin_at = None;
        self.token = None;
        self.inbox.clear();
        self.inbox_tracked = false;
        self.deliver_at = None;
        self.sync = None;
        self.history = None;
    }

    fn report_unsent(&mut self, what: &str, fx: &mut Vec<Effect>) {
        for entry in std::mem::take(&mut self.unsent) {
            fx.push(error(format!("{what}: {}", entry.line)));
        }
    }

    fn begin_login(&mut self, id: i64, password: String, now: Instant, fx: &mut Vec<Effect>) {
        self.phase = Phase::LoggingIn;
        self.forget_session();
        let creds = Credentials { id, password };
        self.creds = Some(creds.clone());
        if self.connected {
            self.send_login(creds, now, fx);
        } else {
            fx.push(Effect::Show(Output::Warn(
                "not connected: logging in as soon as the connection is back".to_owned(),
            )));
        }
    }

    /// LOGIN: with the session token when there is one (after a reconnect),
    /// else the password; resuming after what was shown when the server
    /// numbers its pushes.
    fn send_login(&mut self, creds: Credentials, now: Instant, fx: &mut Vec<Effect>) {
        if self
            .pending
            .values()
            .any(|p| matches!(p.what, Pending::Login { .. }))
        {
            return;
        }
        let line = format!("login {}", creds.id);
        let (credential, token) = match &self.token {
            Some(token) => (Credential::Token(token.clone()), true),
            None => (Credential::Password(creds.password), false),
        };
        let since = (self.inbox_tracked && self.profile.is_some()).then(|| self.inbox.held());
        let request = Request::Login(Login {
            id: creds.id,
            credential,
            since,
        });
        self.send(request, Pending::Login { token }, &line, now, fx);
    }

    fn back_to_menu(&mut self, fx: &mut Vec<Effect>) {
        self.phase = Phase::Menu;
        if self.settings.interactive {
            fx.push(Effect::Show(Output::Menu));
        }
        self.ask(Ask::Menu, fx);
    }

    fn ask(&mut self, ask: Ask, fx: &mut Vec<Effect>) {
        if !self.asking && self.linger_until.is_none() {
            self.asking = true;
            fx.push(Effect::Ask(ask));
        }
    }

    /// Output that `--json` replaces with the raw frames.
    fn show(&self, output: Output, fx: &mut Vec<Effect>) {
        if !self.settings.json {
            fx.push(Effect::Show(output));
        }
    }

    fn report_held(&mut self, fx: &mut Vec<Effect>) {
        for line in std::mem::take(&mut self.held) {
            fx.push(error(format!("not sent: {line}")));
        }
    }

    /// The end of a scripted run: report what never got an answer, then exit.
    fn finish(&mut self, fx: &mut Vec<Effect>) {
        for entry in std::mem::take(&mut self.pending).into_values() {
            if !matches!(entry.what, Pending::Logout) {
                fx.push(error(format!("no reply before exit: {}", entry.line)));
            }
        }
        self.report_unsent("no reply before exit", fx);
        self.report_held(fx);
        let code = if self.connected {
            EXIT_OK
        } else {
            EXIT_CONNECTION
        };
        self.exit(code, fx);
    }

    fn exit(&mut self, code: u8, fx: &mut Vec<Effect>) {
        // What was shown is confirmed before leaving.
        self.confirm_shown(fx);
        self.phase = Phase::Done;
        self.linger_until = None;
        fx.push(Effect::Exit(code));
    }
}

/// A chat message from `me`; the server fills in the time.
fn chat(me: Option<i64>, target: ChatTarget, msg: String, cid: String) -> Request {
    Request::Chat(SendChat {
        id: me,
        target,
        msg,
        time: None,
        cid: Some(cid),
    })
}

/// `15` for a user, `#3` for a group, as the `history` command takes them.
pub fn target_text(target: ChatTarget) -> String {
    match target {
        ChatTarget::User(id) => id.to_string(),
        ChatTarget::Group(id) => format!("#{id}"),
    }
}

fn error(text: String) -> Effect {
    Effect::Show(Output::Error(text))
}

/// The start of a frame, printable, for error messages.
fn preview(frame: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(frame);
    let text = text.trim();
    let mut out = String::new();
    for c in text.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
