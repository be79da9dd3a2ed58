package conditions

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSet(t *testing.T) {
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	base := func() []metav1.Condition {
		return []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "A", LastTransitionTime: old}}
	}
	tests := []struct {
		name        string
		set         metav1.Condition
		wantChanged bool
		wantKeptLTT bool
	}{
		{name: "same", set: metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "A"}, wantKeptLTT: true},
		{name: "new message keeps the transition time", set: metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "A", Message: "m"}, wantChanged: true, wantKeptLTT: true},
		{name: "status flip moves the transition time", set: metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: "B"}, wantChanged: true},
		{name: "new type", set: metav1.Condition{Type: "Degraded", Status: metav1.ConditionFalse, Reason: "C"}, wantChanged: true, wantKeptLTT: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conds := base()
			if got := Set(&conds, tt.set); got != tt.wantChanged {
				t.Fatalf("Set() = %v, want %v", got, tt.wantChanged)
			}
			got := Get(conds, "Ready")
			if got == nil {
				t.Fatal("Ready lost")
			}
			if kept := got.LastTransitionTime.Equal(&old); kept != tt.wantKeptLTT {
				t.Fatalf("lastTransitionTime kept = %v, want %v", kept, tt.wantKeptLTT)
			}
			if Get(conds, tt.set.Type).Reason != tt.set.Reason {
				t.Fatalf("reason = %s, want %s", Get(conds, tt.set.Type).Reason, tt.set.Reason)
			}
		})
	}
}

func TestIsTrueAndEqual(t *testing.T) {
	conds := []metav1.Condition{{Type: "Allocated", Status: metav1.ConditionTrue, Reason: ReasonAllocated}}
	if !IsTrue(conds, "Allocated") || IsTrue(conds, "Programmed") {
		t.Fatal("IsTrue gave the wrong answer")
	}
	a := conds[0]
	b := a
	b.LastTransitionTime = metav1.Now()
	if !Equal(&a, &b) {
		t.Fatal("Equal must ignore lastTransitionTime")
	}
	b.Message = "x"
	if Equal(&a, &b) || Equal(&a, nil) || !Equal(nil, nil) {
		t.Fatal("Equal gave the wrong answer")
	}
}
