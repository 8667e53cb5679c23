//! A tiny classic-BPF assembler (the subset seccomp programs need) with forward labels, and,
//! for tests, an interpreter of the same subset so decisions can be checked without installing
//! a filter.

use libc::sock_filter;

// Classic BPF opcodes (linux/bpf_common.h).
pub(super) const BPF_LD: u16 = 0x00;
pub(super) const BPF_W: u16 = 0x00;
pub(super) const BPF_ABS: u16 = 0x20;
pub(super) const BPF_ALU: u16 = 0x04;
pub(super) const BPF_AND: u16 = 0x50;
pub(super) const BPF_JMP: u16 = 0x05;
pub(super) const BPF_JEQ: u16 = 0x10;
pub(super) const BPF_JGE: u16 = 0x30;
pub(super) const BPF_JSET: u16 = 0x40;
pub(super) const BPF_K: u16 = 0x00;
pub(super) const BPF_RET: u16 = 0x06;

/// A jump target: `NEXT` (the following instruction) or a label made by [`Asm::new_label`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Label(usize);

/// The instruction after the jump.
pub(super) const NEXT: Label = Label(usize::MAX);

enum Insn {
    Stmt(u16, u32),
    Jump(u16, u32, Label, Label),
    Here(Label),
}

/// Collects instructions; [`Asm::finish`] resolves labels into relative jump offsets.
#[derive(Default)]
pub(super) struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

impl Asm {
    pub(super) fn new_label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }
    pub(super) fn ld(&mut self, off: u32) {
        self.insns.push(Insn::Stmt(BPF_LD | BPF_W | BPF_ABS, off));
    }
    pub(super) fn and(&mut self, k: u32) {
        self.insns.push(Insn::Stmt(BPF_ALU | BPF_AND | BPF_K, k));
    }
    pub(super) fn ret(&mut self, k: u32) {
        self.insns.push(Insn::Stmt(BPF_RET | BPF_K, k));
    }
    pub(super) fn jeq(&mut self, k: u32, t: Label, f: Label) {
        self.insns
            .push(Insn::Jump(BPF_JMP | BPF_JEQ | BPF_K, k, t, f));
    }
    pub(super) fn jge(&mut self, k: u32, t: Label, f: Label) {
        self.insns
            .push(Insn::Jump(BPF_JMP | BPF_JGE | BPF_K, k, t, f));
    }
    pub(super) fn jset(&mut self, k: u32, t: Label, f: Label) {
        self.insns
            .push(Insn::Jump(BPF_JMP | BPF_JSET | BPF_K, k, t, f));
    }
    /// Places `l` at the next instruction.
    pub(super) fn here(&mut self, l: Label) {
        self.insns.push(Insn::Here(l));
    }

    /// Resolves labels. Panics on a label never placed, a backward jump or one longer than 255
    /// instructions: all are bugs in the rules, caught by the unit tests.
    pub(super) fn finish(self) -> Vec<sock_filter> {
        let mut at = vec![None; self.labels];
        let mut n = 0usize;
        for i in &self.insns {
            match i {
                Insn::Here(l) => at[l.0] = Some(n),
                _ => n += 1,
            }
        }
        let offset = |l: Label, here: usize| -> u8 {
            if l == NEXT {
                return 0;
            }
            let target = at[l.0].unwrap_or_else(|| panic!("BPF label {l:?} is never placed"));
            let off = target
                .checked_sub(here + 1)
                .unwrap_or_else(|| panic!("BPF label {l:?} jumps backwards"));
            u8::try_from(off).unwrap_or_else(|_| panic!("BPF jump to {l:?} is too far"))
        };
        let mut out = Vec::with_capacity(n);
        for i in &self.insns {
            match *i {
                Insn::Here(_) => {}
                Insn::Stmt(code, k) => out.push(sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Insn::Jump(code, k, t, f) => {
                    let here = out.len();
                    out.push(sock_filter {
                        code,
                        jt: offset(t, here),
                        jf: offset(f, here),
                        k,
                    });
                }
            }
        }
        out
    }
}

/// Runs `prog` on a `struct seccomp_data` made of `arch`, `nr` and `args` and returns the
/// action, as the kernel would (for the instructions [`Asm`] emits).
#[cfg(test)]
pub(crate) fn eval(prog: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => {
                let o = i.k as usize;
                acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => acc &= i.k,
            c if c == BPF_RET | BPF_K => return i.k,
            c if c & 0x07 == BPF_JMP => {
                let taken = match c & 0xf0 {
                    BPF_JEQ => acc == i.k,
                    BPF_JGE => acc >= i.k,
                    BPF_JSET => acc & i.k != 0,
                    _ => panic!("unknown jump {c:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            c => panic!("unknown opcode {c:#x}"),
        }
    }
}
