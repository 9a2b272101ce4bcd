package notifyloop

import (
	"testing"

	"github.com/sysvisor/sysvisor/linux/notify"
)

func TestLostAnswersMatchOnceSameThreadAndCall(t *testing.T) {
	umount := notify.Data{Nr: 166, InstructionPointer: 0x401000, Args: [6]uint64{0x7000, 0}}
	var l lostAnswers
	l.add(&notify.Notif{ID: 1, Pid: 10, Data: umount})
	if l.restarted(&notify.Notif{ID: 2, Pid: 11, Data: umount}) {
		t.Error("another thread's call matched")
	}
	if !l.restarted(&notify.Notif{ID: 3, Pid: 10, Data: umount}) {
		t.Error("the restarted call did not match")
	}
	if l.restarted(&notify.Notif{ID: 4, Pid: 10, Data: umount}) {
		t.Error("matched twice")
	}
	// The thread moves on to another call: forgotten.
	l.add(&notify.Notif{ID: 5, Pid: 10, Data: umount})
	other := umount
	other.Args[1] = 2
	if l.restarted(&notify.Notif{ID: 6, Pid: 10, Data: other}) || l.restarted(&notify.Notif{ID: 7, Pid: 10, Data: umount}) {
		t.Error("a call other than the lost one matched, or the lost one after it")
	}
	// Bounded: the oldest goes.
	for i := range 9 {
		l.add(&notify.Notif{ID: uint64(10 + i), Pid: uint32(100 + i), Data: umount})
	}
	if l.restarted(&notify.Notif{ID: 30, Pid: 100, Data: umount}) || !l.restarted(&notify.Notif{ID: 31, Pid: 108, Data: umount}) {
		t.Error("not the last 8 kept")
	}
}
