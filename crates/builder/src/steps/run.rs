//! The run step: a shell command in the sandbox over the image (with the network unless the
//! runtime file says otherwise). It has nothing to lock: it is its definition.

use std::io::Write;

use crate::error::Result;
use crate::runtime_file::RunStep;
use crate::steps::{Rebase, RebaseContext, RunContext, StepKind, StepOutput};

impl StepKind for RunStep {
    fn label(&self) -> String {
        format!("run {}", self.command)
    }

    fn sees_env(&self) -> bool {
        true
    }

    fn run(&self, cx: &RunContext<'_>, log: &mut dyn Write) -> Result<StepOutput> {
        let argv = vec!["/bin/sh".into(), "-c".into(), self.command.clone()];
        Ok(cx.sandboxed(argv, &self.user, self.network, log)?.into())
    }

    fn rebase(&self, _cx: &RebaseContext<'_>) -> Result<Rebase> {
        Ok(Rebase::Rebuild("it runs inside the base".into()))
    }
}
