//! The terminal of `kite.prompt` and `kite.getPass`: one reader thread per process asks one
//! question at a time, each with a deadline, and never leaves a read behind.
//!
//! stdin and the controlling terminal belong to the process, not to a kite, so the reader
//! thread and the turn at the terminal are process-wide: two kites of one process take turns
//! too. The behaviour callers see is described in [`crate::builtins`].

use std::time::Duration;

use kite_core::{ErrorKind, KiteError};

/// The longest answer read, in bytes (a terminal in canonical mode ends a line at 4,095).
const MAX_ANSWER: usize = 64 << 10;

/// What a question reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Question {
    /// A line typed on stdin, echoed (`kite.prompt`).
    Line,
    /// A line typed on the controlling terminal, not echoed (`kite.getPass`).
    Password,
}

impl Question {
    fn method(self) -> &'static str {
        match self {
            Question::Line => "kite.prompt",
            Question::Password => "kite.getPass",
        }
    }
}

/// How long one call may take, and how many calls may wait for the terminal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// The whole call, its wait for the terminal included.
    pub(crate) timeout: Duration,
    /// Calls waiting behind the one the terminal shows.
    pub(crate) max_waiting: usize,
}

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PromptError {
    /// stdin is not a terminal, or there is no controlling terminal.
    #[error("no terminal attached ({0})")]
    NoTerminal(String),
    /// The terminal's foreground process group is not this process's: reading it would stop
    /// the whole process (`SIGTTIN`).
    #[error("this kite runs in the background of its terminal")]
    Background,
    /// [`Budget::max_waiting`] calls wait already.
    #[error("{0} prompts are already waiting for the terminal")]
    Busy(usize),
    /// The terminal was not free before the deadline.
    #[error("the terminal stayed busy for {0:?}")]
    NoTurn(Duration),
    /// Nobody answered before the deadline.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The terminal reported end of input (Ctrl-D) before a line.
    #[error("end of input")]
    EndOfInput,
    /// The line typed is longer than [`MAX_ANSWER`].
    #[error("the answer is longer than {MAX_ANSWER} bytes")]
    TooLong,
    /// Reading or writing the terminal failed.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

impl PromptError {
    fn kind(&self) -> ErrorKind {
        match self {
            PromptError::Busy(_) => ErrorKind::RequestLimit,
            PromptError::NoTurn(_) | PromptError::NoAnswer(_) => ErrorKind::Timeout,
            _ => ErrorKind::Generic,
        }
    }
}

/// Shows `prompt` on the terminal and returns the line typed (without its line end), or the
/// kite error the caller gets, whose message starts with the method's name.
pub(crate) async fn ask(
    question: Question,
    prompt: &str,
    budget: Budget,
) -> Result<String, KiteError> {
    imp::ask(question, shown(prompt), budget)
        .await
        .map_err(|e| KiteError::new(e.kind(), format!("{}: {e}", question.method())))
}

/// The prompt as shown: control characters other than tab and newline are written escaped
/// (`\u{1b}`), so that a caller cannot send the terminal escape sequences.
fn shown(prompt: &str) -> String {
    let mut out = String::with_capacity(prompt.len());
    for c in prompt.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(unix)]
mod imp {
    use std::fs::File;
    use std::io::{IsTerminal, Write};
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::panic::AssertUnwindSafe;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::{Duration, Instant};

    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::io::Errno;
    use rustix::termios::{self, LocalModes, OptionalActions, QueueSelector};
    use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

    use super::{Budget, MAX_ANSWER, PromptError, Question};

    /// The process's terminal: its reader thread and the turn to use it.
    struct Terminal {
        /// Questions for the reader thread. Only the holder of `turn` sends, and the turn is
        /// released by the reader once done, so at most one question is ever queued here.
        jobs: mpsc::Sender<Job>,
        /// The write end of the reader's wake-up pipe (non-blocking): a byte makes it look at
        /// [`Job::gone`] while it waits for input.
        wake: OwnedFd,
        /// The turn at the terminal, taken in arrival order.
        turn: Arc<Semaphore>,
        /// Calls waiting for `turn`.
        waiting: AtomicUsize,
    }

    /// One question for the reader thread.
    struct Job {
        question: Question,
        prompt: String,
        deadline: Instant,
        timeout: Duration,
        /// Set when the caller gave up (its deadline, or its call was dropped).
        gone: Arc<AtomicBool>,
        reply: oneshot::Sender<Result<String, PromptError>>,
        /// The terminal's turn, released when the reader is done with this question.
        turn: OwnedSemaphorePermit,
    }

    static TERMINAL: Mutex<Option<Arc<Terminal>>> = Mutex::new(None);

    /// How long past its deadline a caller waits for the reader's answer before giving up on
    /// a reader stuck writing the prompt.
    const STUCK: Duration = Duration::from_secs(1);

    fn io(e: Errno) -> PromptError {
        PromptError::Io(e.into())
    }

    /// The process's terminal, its reader thread started on first use.
    fn terminal() -> Result<Arc<Terminal>, PromptError> {
        let mut slot = TERMINAL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let (wake_rx, wake_tx) = rustix::pipe::pipe().map_err(io)?;
        for fd in [&wake_rx, &wake_tx] {
            rustix::io::ioctl_fionbio(fd, true).map_err(io)?;
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).map_err(io)?;
        }
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("kite-terminal".into())
            .spawn(move || reader(&rx, &wake_rx))?;
        let t = Arc::new(Terminal {
            jobs,
            wake: wake_tx,
            turn: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
        });
        *slot = Some(t.clone());
        Ok(t)
    }

    /// A place in the line for the terminal's turn.
    struct InLine<'a>(&'a Terminal);

    impl<'a> InLine<'a> {
        fn join(terminal: &'a Terminal, max: usize) -> Result<Self, PromptError> {
            terminal
                .waiting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max).then_some(n + 1)
                })
                .map_err(PromptError::Busy)?;
            Ok(InLine(terminal))
        }
    }

    impl Drop for InLine<'_> {
        fn drop(&mut self) {
            self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Tells the reader, when dropped before [`Gone::answered`], that the caller gave up.
    struct Gone {
        flag: Arc<AtomicBool>,
        terminal: Arc<Terminal>,
        armed: bool,
    }

    impl Gone {
        fn answered(mut self) {
            self.armed = false;
        }
    }

    impl Drop for Gone {
        fn drop(&mut self) {
            if self.armed {
                self.flag.store(true, Ordering::SeqCst);
                // A full pipe is awake already.
                let _ = rustix::io::write(&self.terminal.wake, &[1]);
            }
        }
    }

    pub(super) async fn ask(
        question: Question,
        prompt: String,
        budget: Budget,
    ) -> Result<String, PromptError> {
        let now = Instant::now();
        let deadline = now
            .checked_add(budget.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        attached(question)?;
        let terminal = terminal()?;
        let turn = match terminal.turn.clone().try_acquire_owned() {
            Ok(turn) => turn,
            Err(_) => {
                let _in_line = InLine::join(&terminal, budget.max_waiting)?;
                tokio::time::timeout_at(deadline.into(), terminal.turn.clone().acquire_owned())
                    .await
                    .map_err(|_| PromptError::NoTurn(budget.timeout))?
                    .map_err(|_| std::io::Error::other("the terminal is closed"))?
            }
        };
        let gone = Gone {
            flag: Arc::default(),
            terminal: terminal.clone(),
            armed: true,
        };
        let (reply, answer) = oneshot::channel();
        terminal
            .jobs
            .send(Job {
                question,
                prompt,
                deadline,
                timeout: budget.timeout,
                gone: gone.flag.clone(),
                reply,
                turn,
            })
            .map_err(|_| std::io::Error::other("the terminal reader has stopped"))?;
        // The reader ends the question at the deadline and answers once the terminal is as it
        // was; this timer only covers a reader stuck on a terminal that does not take output.
        match tokio::time::timeout_at((deadline + STUCK).into(), answer).await {
            Ok(Ok(answer)) => {
                gone.answered();
                answer
            }
            Ok(Err(_)) => Err(std::io::Error::other("the terminal reader has stopped").into()),
            Err(_) => Err(PromptError::NoAnswer(budget.timeout)),
        }
    }

    /// Whether the terminal `question` needs is there, checked without waiting for it.
    fn attached(question: Question) -> Result<(), PromptError> {
        match question {
            Question::Line => {
                let stdin = std::io::stdin();
                if !stdin.is_terminal() {
                    return Err(PromptError::NoTerminal("stdin is not a terminal".into()));
                }
                in_foreground(stdin.as_fd())
            }
            Question::Password => in_foreground(controlling_terminal()?.as_fd()),
        }
    }

    fn controlling_terminal() -> Result<File, PromptError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|e| PromptError::NoTerminal(format!("no controlling terminal: {e}")))
    }

    /// Fails if `tty` is this process's controlling terminal and another process group has
    /// its foreground (a kite started in the background with `&`): reading it would stop the
    /// whole process. A terminal that is not the controlling one has no job control.
    fn in_foreground(tty: BorrowedFd<'_>) -> Result<(), PromptError> {
        match termios::tcgetpgrp(tty) {
            Ok(group) if group != rustix::process::getpgrp() => Err(PromptError::Background),
            _ => Ok(()),
        }
    }

    /// The reader thread: one question at a time, for the life of the process.
    fn reader(jobs: &mpsc::Receiver<Job>, wake: &OwnedFd) {
        while let Ok(job) = jobs.recv() {
            drain(wake.as_fd());
            let Job {
                question,
                prompt,
                deadline,
                timeout,
                gone,
                reply,
                turn,
            } = job;
            let asking = Asking {
                deadline,
                timeout,
                gone: &gone,
                wake: wake.as_fd(),
            };
            let answer = if asking.given_up() {
                Err(PromptError::NoAnswer(timeout))
            } else {
                std::panic::catch_unwind(AssertUnwindSafe(|| asking.ask(question, &prompt)))
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::other("the terminal reader panicked").into())
                    })
            };
            let _ = reply.send(answer);
            // The terminal is as it was: the next question may have it.
            drop(turn);
        }
    }

    /// Empties the wake-up pipe.
    fn drain(wake: BorrowedFd<'_>) {
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(wake, &mut buf), Ok(1..)) {}
    }

    fn write_flush(out: &mut impl Write, text: &str) -> std::io::Result<()> {
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Input typed before the question is shown is not its answer.
    fn discard_typeahead(tty: BorrowedFd<'_>) {
        let _ = termios::tcflush(tty, QueueSelector::IFlush);
    }

    /// Echo off on a terminal until dropped (newlines still echoed).
    struct Quiet<'a> {
        tty: &'a File,
        saved: termios::Termios,
    }

    impl<'a> Quiet<'a> {
        fn new(tty: &'a File) -> Result<Self, PromptError> {
            let saved = termios::tcgetattr(tty).map_err(io)?;
            let mut quiet = saved.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            quiet.local_modes.insert(LocalModes::ECHONL);
            termios::tcsetattr(tty, OptionalActions::Now, &quiet).map_err(io)?;
            Ok(Quiet { tty, saved })
        }
    }

    impl Drop for Quiet<'_> {
        fn drop(&mut self) {
            let _ = termios::tcsetattr(self.tty, OptionalActions::Now, &self.saved);
        }
    }

    /// One question being asked by the reader thread.
    struct Asking<'a> {
        deadline: Instant,
        timeout: Duration,
        gone: &'a AtomicBool,
        wake: BorrowedFd<'a>,
    }

    impl Asking<'_> {
        fn given_up(&self) -> bool {
            self.gone.load(Ordering::SeqCst) || Instant::now() >= self.deadline
        }

        fn ask(&self, question: Question, prompt: &str) -> Result<String, PromptError> {
            match question {
                Question::Line => self.line(prompt),
                Question::Password => self.password(prompt),
            }
        }

        /// `kite.prompt`: the prompt on stdout, the answer from stdin.
        fn line(&self, prompt: &str) -> Result<String, PromptError> {
            attached(Question::Line)?;
            let stdin = std::io::stdin();
            let input = stdin.as_fd();
            discard_typeahead(input);
            write_flush(&mut std::io::stdout().lock(), prompt)?;
            let answer = self.read_line(input);
            if answer.is_err() {
                // What comes next is not written after the abandoned prompt.
                let _ = write_flush(&mut std::io::stdout().lock(), "\n");
            }
            answer
        }

        /// `kite.getPass`: prompt and answer on the controlling terminal, echo off.
        fn password(&self, prompt: &str) -> Result<String, PromptError> {
            let tty = controlling_terminal()?;
            in_foreground(tty.as_fd())?;
            let quiet = Quiet::new(&tty)?;
            discard_typeahead(tty.as_fd());
            write_flush(&mut &tty, prompt)?;
            let answer = self.read_line(tty.as_fd());
            drop(quiet);
            if answer.is_err() {
                let _ = write_flush(&mut &tty, "\n");
            }
            answer
        }

        /// Reads up to a line end, until the deadline or the caller gives up: the read never
        /// outlives its question.
        fn read_line(&self, input: BorrowedFd<'_>) -> Result<String, PromptError> {
            let mut line = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                if self.given_up() {
                    return Err(PromptError::NoAnswer(self.timeout));
                }
                let left = self
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(3600));
                let left = Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: left.subsec_nanos().into(),
                };
                let mut fds = [
                    PollFd::new(&input, PollFlags::IN),
                    PollFd::new(&self.wake, PollFlags::IN),
                ];
                match poll(&mut fds, Some(&left)) {
                    Ok(_) => {}
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(io(e)),
                }
                if !fds[1].revents().is_empty() {
                    drain(self.wake);
                }
                if fds[0].revents().is_empty() {
                    continue;
                }
                let n = match rustix::io::read(input, &mut chunk) {
                    Ok(n) => n,
                    Err(Errno::INTR | Errno::AGAIN) => continue,
                    Err(e) => return Err(io(e)),
                };
                if n == 0 {
                    return if line.is_empty() {
                        Err(PromptError::EndOfInput)
                    } else {
                        Ok(String::from_utf8_lossy(&line).into_owned())
                    };
                }
                let got = &chunk[..n];
                if let Some(end) = got.iter().position(|b| matches!(b, b'\n' | b'\r')) {
                    line.extend_from_slice(&got[..end]);
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
                line.extend_from_slice(got);
                if line.len() > MAX_ANSWER {
                    return Err(PromptError::TooLong);
                }
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::{Budget, PromptError, Question};

    pub(super) async fn ask(
        _question: Question,
        _prompt: String,
        _budget: Budget,
    ) -> Result<String, PromptError> {
        Err(PromptError::NoTerminal(
            "terminal prompts are served on Unix only".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(shown("name?\t"), "name?\t");
        assert_eq!(shown("two\nlines: "), "two\nlines: ");
        assert_eq!(
            shown("\u{1b}]0;pwned\u{7}ok? "),
            "\\u{1b}]0;pwned\\u{7}ok? "
        );
        assert_eq!(shown("caf\u{e9} \u{9b}2J"), "caf\u{e9} \\u{9b}2J");
    }

    #[test]
    fn errors_have_the_kinds_callers_see() {
        let t = Duration::from_secs(60);
        assert_eq!(PromptError::Busy(16).kind(), ErrorKind::RequestLimit);
        assert_eq!(PromptError::NoTurn(t).kind(), ErrorKind::Timeout);
        assert_eq!(PromptError::NoAnswer(t).kind(), ErrorKind::Timeout);
        assert_eq!(PromptError::NoAnswer(t).to_string(), "no answer within 60s");
        assert_eq!(
            PromptError::NoTerminal("stdin is not a terminal".into()).kind(),
            ErrorKind::Generic
        );
    }
}
