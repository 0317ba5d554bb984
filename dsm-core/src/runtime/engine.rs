//! The runtime as the fault engines see it: [`Resolve`] for [`Inner`], so that
//! [`crate::fault`] drives the runtime without naming it.

use super::Inner;
use crate::error::Result;
use crate::fault::Resolve;
use crate::space::GlobalSpace;

impl Resolve for Inner {
    fn resolve(&self, addr: usize, write: bool) -> Result<()> {
        Inner::resolve(self, addr, write)
    }

    fn space(&self) -> &GlobalSpace {
        &self.space
    }

    fn rank(&self) -> usize {
        self.me
    }
}
