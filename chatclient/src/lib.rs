//! chatclient: a terminal client for ChatChat that people can use and
//! scripts can drive. It speaks protocol v2 (see docs/protocol.md); the
//! `protocol` crate encodes its requests and reads the server's frames.
//!
//! - [`app`] is the state machine (no I/O), [`command`] parses typed lines,
//!   [`inbox`] tracks which pushed messages were shown (resume, DELIVERED),
//!   [`cid`] names chat sends so that re-sending one stores it once;
//! - [`net`] owns the connection and reconnecting, [`ui`] the terminal;
//! - [`run`] wires them: one task carries out the state machine's effects,
//!   a reader task per connection feeds it frames, and a thread reads input.

pub mod app;
pub mod cid;
pub mod command;
pub mod inbox;
pub mod net;
pub mod ui;

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::{App, Ask, Effect, Settings, EXIT_CONNECTION};
use crate::net::{Link, Target};
use crate::ui::{Palette, Sink};

/// Capacity of the event queue. When full, the connection's reader waits
/// (TCP then slows the server down) and the input thread waits.
pub const EVENT_QUEUE: usize = 1024;

/// Everything that happens to the client, in one queue.
#[derive(Debug)]
pub enum Event {
    /// A line of input (without any guarantee about its line ending).
    Input(String),
    InputEof,
    /// Ctrl-C at an interactive prompt.
    Interrupt,
    Frame {
        generation: u64,
        frame: net::Frame,
    },
    Closed {
        generation: u64,
        reason: String,
    },
    Connected {
        generation: u64,
        stream: net::Stream,
    },
    GaveUp {
        generation: u64,
        reason: String,
    },
}

/// How to run, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub settings: Settings,
    pub color: bool,
    /// Stop reconnecting after this long (`None`: never).
    pub reconnect_for: Option<Duration>,
}

/// Runs the client until it exits; returns the exit code.
pub async fn run(options: Options) -> u8 {
    let stream = match net::connect(&options.target).await {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("error: cannot connect to {}: {e}", options.target);
            return EXIT_CONNECTION;
        }
    };
    tracing::debug!(target = %options.target, "connected");
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let interactive = options.settings.interactive;
    let (sink, asks) = if interactive {
        match ui::spawn_interactive_input(events_tx.clone(), options.color) {
            Ok(parts) => parts,
            Err(e) => {
                eprintln!("error: cannot start the line editor: {e}");
                return app::EXIT_USAGE;
            }
        }
    } else {
        (Sink::Plain, ui::spawn_script_input(events_tx.clone()))
    };
    let driver = Driver {
        app: App::new(options.settings.clone()),
        palette: Palette {
            color: options.color,
        },
        interactive,
        sink,
        asks,
        events_tx: events_tx.clone(),
        link: Some(Link::start(stream, 0, events_tx)),
        generation: 0,
        target: options.target,
        reconnect_for: options.reconnect_for,
    };
    driver.run(events).await
}

struct Driver {
    app: App,
    palette: Palette,
    interactive: bool,
    sink: Sink,
    asks: std_mpsc::Sender<Ask>,
    events_tx: mpsc::Sender<Event>,
    link: Option<Link>,
    generation: u64,
    target: Target,
    reconnect_for: Option<Duration>,
}

impl Driver {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) -> u8 {
        let mut todo: VecDeque<Effect> = self.app.start(Instant::now()).into();
        loop {
            while let Some(effect) = todo.pop_front() {
                if let Some(code) = self.apply(effect, &mut todo).await {
                    return code;
                }
            }
            let deadline = self.app.next_deadline();
            let event = tokio::select! {
                // Frames first: after a stall, what arrived is handled
                // before timers judge the link.
                biased;
                event = events.recv() => event,
                () = sleep_until(deadline) => None,
            };
            let now = Instant::now();
            let effects = match event {
                None => self.app.on_tick(now),
                Some(event) => self.on_event(event, now),
            };
            todo.extend(effects);
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        match event {
            Event::Input(line) => self.app.on_input(&line, now),
            Event::InputEof => self.app.on_input_eof(now),
            Event::Interrupt => self.app.on_interrupt(now),
            Event::Frame { generation, frame } if generation == self.generation => {
                tracing::debug!(frame = %String::from_utf8_lossy(&frame), "received");
                self.app.on_frame(&frame, now)
            }
            Event::Closed { generation, reason } if generation == self.generation => {
                self.lose_connection(&reason, None, now)
            }
            Event::Connected { generation, stream } if generation == self.generation => {
                self.link = Some(Link::start(stream, generation, self.events_tx.clone()));
                self.app.on_connected(now)
            }
            Event::GaveUp { generation, reason } if generation == self.generation => {
                self.app.on_reconnect_gave_up(&reason)
            }
            // Events of a connection that has since been replaced.
            Event::Frame { .. }
            | Event::Closed { .. }
            | Event::Connected { .. }
            | Event::GaveUp { .. } => Vec::new(),
        }
    }

    /// Drops the connection, starts reconnecting (after `delay`, else with
    /// the usual backoff), and tells the app.
    fn lose_connection(
        &mut self,
        reason: &str,
        delay: Option<Duration>,
        now: Instant,
    ) -> Vec<Effect> {
        self.link = None;
        self.generation += 1;
        let give_up = if self.interactive {
            None
        } else {
            self.reconnect_for
        };
        net::spawn_reconnect(
            self.target.clone(),
            self.generation,
            give_up,
            delay,
            self.events_tx.clone(),
        );
        self.app.on_disconnected(reason, now)
    }

    /// Carries out one effect; `Some(code)` to exit.
    async fn apply(&mut self, effect: Effect, todo: &mut VecDeque<Effect>) -> Option<u8> {
        match effect {
            Effect::Send { rid, request } => {
                let Some(link) = self.link.as_mut() else {
                    tracing::debug!("dropped a frame: not connected");
                    return None;
                };
                // The Debug form of a request never shows a password.
                tracing::debug!(rid, ?request, "sending");
                if let Err(reason) = link.send(rid, &request).await {
                    let effects = self.lose_connection(&reason, None, Instant::now());
                    todo.extend(effects);
                }
            }
            Effect::Show(output) => {
                if let Some((stream, text)) = ui::render(&output, self.interactive, self.palette) {
                    self.sink.emit(stream, &text);
                }
            }
            Effect::Ask(ask) => {
                let _ = self.asks.send(ask);
            }
            Effect::Disconnect(reason) => {
                if self.link.is_some() {
                    let effects = self.lose_connection(&reason, None, Instant::now());
                    todo.extend(effects);
                }
            }
            Effect::Reconnect { reason, after } => {
                if self.link.is_some() {
                    let effects = self.lose_connection(&reason, Some(after), Instant::now());
                    todo.extend(effects);
                }
            }
            Effect::Exit(code) => {
                self.link = None;
                return Some(code);
            }
        }
        None
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Login, Request};

    use super::*;

    #[test]
    fn debug_logs_mask_passwords() {
        let send = Effect::Send {
            rid: 1,
            request: Request::Login(Login::with_password(1, "hunter2")),
        };
        let logged = format!("{send:?}");
        assert!(!logged.contains("hunter2"), "{logged}");
    }
}
