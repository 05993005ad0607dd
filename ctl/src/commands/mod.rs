//! One file per subcommand. Each builds a request, sends it, and prints the reply.

pub mod add;
pub mod cancel;
pub mod logs;
pub mod ls;
pub mod show;
pub mod status;
