//! Parsing one typed line into a command, in the original client's forms
//! (`chat:friendid:message` and so on). Only the first separators split, so a
//! message may contain any text, colons included.

use std::fmt;

use protocol::ChatTarget;

/// One command typed after login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Chat {
        to: i64,
        msg: String,
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
    GroupChat {
        group: i64,
        msg: String,
    },
    /// `history:ID` or `history:#G`: a page of the conversation; the same
    /// command again shows the page before it.
    History {
        of: ChatTarget,
    },
    Loginout,
    Friends,
    Groups,
    Quit,
}

/// Why a line is not a command; the text is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Unknown(String),
    Usage(&'static str),
    BadId { what: &'static str, text: String },
    EmptyMessage,
    BadGroupName,
    DescTooLong,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(word) => {
                write!(f, "invalid input command {word:?}; type help for the list")
            }
            CommandError::Usage(usage) => write!(f, "usage: {usage}"),
            CommandError::BadId { what, text } => {
                write!(f, "{what} must be a positive number, not {text:?}")
            }
            CommandError::EmptyMessage => f.write_str("the message is empty"),
            CommandError::BadGroupName => f.write_str(&format!(
                "a group name has 1 to {} characters and no colon",
                protocol::MAX_NAME_CHARS
            )),
            CommandError::DescTooLong => write!(
                f,
                "a group description has at most {} characters",
                protocol::MAX_GROUP_DESC_CHARS
            ),
        }
    }
}

/// Each command with its usage and what it does, for `help`.
pub const COMMANDS: &[(&str, &str)] = &[
    ("help", "show this list"),
    ("chat:friendid:message", "send a message to a user"),
    ("addfriend:friendid", "add a friend"),
    ("creategroup:groupname:groupdesc", "create a group"),
    ("addgroup:groupid", "join a group"),
    ("groupchat:groupid:message", "send a message to a group"),
    (
        "history:friendid",
        "the latest messages with a user; again for older ones",
    ),
    (
        "history:#groupid",
        "the latest messages of a group; again for older ones",
    ),
    ("friends", "list your friends again"),
    ("groups", "list your groups and their members again"),
    ("loginout", "log out and go back to the menu"),
    ("quit", "leave the program"),
];

/// The command words, for completion.
pub const WORDS: &[&str] = &[
    "help",
    "chat:",
    "addfriend:",
    "creategroup:",
    "addgroup:",
    "groupchat:",
    "history:",
    "friends",
    "groups",
    "loginout",
    "quit",
];

/// Splits at the first separator: an ASCII colon, or the full-width colon
/// that Chinese input methods produce.
fn split_first(text: &str) -> Option<(&str, &str)> {
    let index = text.find([':', '：'])?;
    let sep_len = text[index..].chars().next().map_or(1, char::len_utf8);
    Some((&text[..index], &text[index + sep_len..]))
}

fn id(what: &'static str, text: &str) -> Result<i64, CommandError> {
    match text.trim().parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(CommandError::BadId {
            what,
            text: text.trim().to_owned(),
        }),
    }
}

fn message(text: &str) -> Result<String, CommandError> {
    if text.trim().is_empty() {
        Err(CommandError::EmptyMessage)
    } else {
        Ok(text.to_owned())
    }
}

/// Parses one line. `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let (word, rest) = match split_first(line) {
        Some((word, rest)) => (word.trim(), Some(rest)),
        None => (line.trim(), None),
    };
    let word_lower = word.to_ascii_lowercase();
    let command = match word_lower.as_str() {
        "help" => Command::Help,
        "loginout" | "logout" => Command::Loginout,
        "friends" => Command::Friends,
        "groups" => Command::Groups,
        "quit" | "exit" => Command::Quit,
        "chat" => {
            let (to, msg) = rest
                .and_then(split_first)
                .ok_or(CommandError::Usage("chat:friendid:message"))?;
            Command::Chat {
                to: id("friendid", to)?,
                msg: message(msg)?,
            }
        }
        "groupchat" => {
            let (group, msg) = rest
                .and_then(split_first)
                .ok_or(CommandError::Usage("groupchat:groupid:message"))?;
            Command::GroupChat {
                group: id("groupid", group)?,
                msg: message(msg)?,
            }
        }
        "addfriend" => Command::AddFriend {
            id: id(
                "friendid",
                rest.ok_or(CommandError::Usage("addfriend:friendid"))?,
            )?,
        },
        "addgroup" => Command::AddGroup {
            id: id(
                "groupid",
                rest.ok_or(CommandError::Usage("addgroup:groupid"))?,
            )?,
        },
        "history" => {
            let rest = rest.ok_or(CommandError::Usage("history:friendid or history:#groupid"))?;
            match rest.trim().strip_prefix('#') {
                Some(group) => Command::History {
                    of: ChatTarget::Group(id("groupid", group)?),
                },
                None => Command::History {
                    of: ChatTarget::User(id("friendid", rest)?),
                },
            }
        }
        "creategroup" => {
            let rest = rest.ok_or(CommandError::Usage("creategroup:groupname:groupdesc"))?;
            let (name, desc) = split_first(rest).unwrap_or((rest, ""));
            let name = name.trim();
            if !protocol::valid_name(name) {
                return Err(CommandError::BadGroupName);
            }
            if desc.chars().count() > protocol::MAX_GROUP_DESC_CHARS {
                return Err(CommandError::DescTooLong);
            }
            Command::CreateGroup {
                name: name.to_owned(),
                desc: desc.to_owned(),
            }
        }
        _ => return Err(CommandError::Unknown(word.to_owned())),
    };
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn original_forms() {
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("loginout"), Command::Loginout);
        assert_eq!(
            ok("chat:15:hello"),
            Command::Chat {
                to: 15,
                msg: "hello".into()
            }
        );
        assert_eq!(ok("addfriend:15"), Command::AddFriend { id: 15 });
        assert_eq!(
            ok("creategroup:rust:we like rust"),
            Command::CreateGroup {
                name: "rust".into(),
                desc: "we like rust".into()
            }
        );
        assert_eq!(ok("addgroup:3"), Command::AddGroup { id: 3 });
        assert_eq!(
            ok("groupchat:3:hi all"),
            Command::GroupChat {
                group: 3,
                msg: "hi all".into()
            }
        );
    }

    #[test]
    fn only_the_first_separators_split() {
        assert_eq!(
            ok("chat:15:a:b::c: "),
            Command::Chat {
                to: 15,
                msg: "a:b::c: ".into()
            }
        );
        assert_eq!(
            ok("groupchat:3:time is 10:30"),
            Command::GroupChat {
                group: 3,
                msg: "time is 10:30".into()
            }
        );
        assert_eq!(
            ok("creategroup:g:desc: with: colons"),
            Command::CreateGroup {
                name: "g".into(),
                desc: "desc: with: colons".into()
            }
        );
    }

    #[test]
    fn any_text_in_messages() {
        for text in [
            "你好，世界",
            "😀🎉 emoji",
            "\"double\" and 'single' quotes",
            "back\\slash \\n not a newline",
            "  leading and trailing spaces  ",
            "{\"msgid\":1}",
        ] {
            assert_eq!(
                ok(&format!("chat:7:{text}")),
                Command::Chat {
                    to: 7,
                    msg: text.into()
                }
            );
        }
        assert_eq!(
            ok("creategroup:中文群:描述"),
            Command::CreateGroup {
                name: "中文群".into(),
                desc: "描述".into()
            }
        );
    }

    #[test]
    fn full_width_colons_and_line_ends() {
        assert_eq!(
            ok("chat：7：你好：世界\r\n"),
            Command::Chat {
                to: 7,
                msg: "你好：世界".into()
            }
        );
        assert_eq!(ok(" Help \r"), Command::Help);
        assert_eq!(
            ok("chat: 7 :x"),
            Command::Chat {
                to: 7,
                msg: "x".into()
            }
        );
    }

    #[test]
    fn extras_and_aliases() {
        assert_eq!(ok("friends"), Command::Friends);
        assert_eq!(ok("groups"), Command::Groups);
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("exit"), Command::Quit);
        assert_eq!(ok("logout"), Command::Loginout);
        assert_eq!(
            ok("creategroup:nodesc"),
            Command::CreateGroup {
                name: "nodesc".into(),
                desc: String::new()
            }
        );
        assert_eq!(
            ok("history:15"),
            Command::History {
                of: ChatTarget::User(15)
            }
        );
        assert_eq!(
            ok("history: #3 "),
            Command::History {
                of: ChatTarget::Group(3)
            }
        );
        assert!(matches!(
            parse("history:#x"),
            Err(CommandError::BadId { .. })
        ));
        assert!(matches!(parse("history"), Err(CommandError::Usage(_))));
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse("hello"), Err(CommandError::Unknown("hello".into())));
        assert_eq!(
            parse("chat:15"),
            Err(CommandError::Usage("chat:friendid:message"))
        );
        assert_eq!(
            parse("chat"),
            Err(CommandError::Usage("chat:friendid:message"))
        );
        assert_eq!(
            parse("chat:abc:hi"),
            Err(CommandError::BadId {
                what: "friendid",
                text: "abc".into()
            })
        );
        assert!(matches!(
            parse("chat:-1:hi"),
            Err(CommandError::BadId { .. })
        ));
        assert_eq!(parse("chat:1:   "), Err(CommandError::EmptyMessage));
        assert_eq!(
            parse("addfriend"),
            Err(CommandError::Usage("addfriend:friendid"))
        );
        assert!(matches!(
            parse("addgroup:x"),
            Err(CommandError::BadId { .. })
        ));
        assert_eq!(parse("creategroup::d"), Err(CommandError::BadGroupName));
        assert_eq!(
            parse(&format!("creategroup:{}", "x".repeat(51))),
            Err(CommandError::BadGroupName)
        );
        assert_eq!(
            parse(&format!("creategroup:g:{}", "d".repeat(201))),
            Err(CommandError::DescTooLong)
        );
        assert!(CommandError::Unknown("x".into())
            .to_string()
            .contains("help"));
    }
}
