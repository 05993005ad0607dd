//! One file per subcommand (or family). Each builds a request, sends it, and prints the reply.

pub mod add;
pub mod cancel;
pub mod config;
pub mod control;
pub mod edit;
pub mod logs;
pub mod ls;
pub mod man;
pub mod next;
pub mod pause;
pub mod queue;
pub mod show;
pub mod status;
pub mod timer;
pub mod wait;
pub mod watch;
