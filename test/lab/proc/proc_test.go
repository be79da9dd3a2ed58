package proc

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids", "sleeper.pid")
	p, err := Start(Spec{
		Argv:    []string{"sh", "-c", "echo started; while :; do sleep 0.1; done", "marker-" + dir},
		Log:     filepath.Join(dir, "logs", "sleeper.log"),
		PIDFile: pidFile,
		Marker:  dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(p.PID, syscall.SIGKILL) })
	logFile := filepath.Join(dir, "logs", "sleeper.log")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logFile); string(b) == "started\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process's output never reached its log")
		}
	}
	got, err := ReadPIDFile(pidFile)
	if err != nil || got != p.PID {
		t.Fatalf("ReadPIDFile = %d, %v; want %d", got, err, p.PID)
	}
	if !Ours(p.PID, dir) {
		t.Fatalf("Ours(%d, %q) = false for the process just started", p.PID, dir)
	}
	if Ours(p.PID, "/some/other/lab") {
		t.Fatalf("Ours matched a marker the command line does not contain")
	}
	files, err := PIDFiles(dir)
	if err != nil || len(files) != 1 || files[0] != pidFile {
		t.Fatalf("PIDFiles = %v, %v; want [%s]", files, err, pidFile)
	}
	// A stranger's marker leaves the process alone.
	if err := Stop(p.PID, "/not/ours", syscall.SIGTERM, time.Second); err != nil {
		t.Fatal(err)
	}
	if !Alive(p.PID) {
		t.Fatal("Stop with a foreign marker killed the process")
	}
	if err := StopPIDFile(pidFile, dir, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the process did not exit")
	}
	if Alive(p.PID) {
		t.Fatal("the process is alive after StopPIDFile")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("the PID file remains: %v", err)
	}
	// Idempotent: stopping again is fine.
	if err := StopPIDFile(pidFile, dir, syscall.SIGTERM, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesUnmarkedCommand(t *testing.T) {
	if _, err := Start(Spec{Argv: []string{"true"}, Marker: "/lab/state"}); err == nil {
		t.Fatal("Start accepted a command line without the marker")
	}
	if _, err := Start(Spec{Marker: "x"}); err == nil {
		t.Fatal("Start accepted an empty command")
	}
}

func TestReadPIDFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		want    int
		wantErr bool
	}{
		{"valid", "1234\n", 1234, false},
		{"garbage", "abc", 0, true},
		{"init", "1", 0, true},
		{"negative", "-5", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".pid")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadPIDFile(path)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ReadPIDFile(%q) = %d, %v; want %d, error %v", tt.content, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if got, err := ReadPIDFile(filepath.Join(dir, "missing.pid")); got != 0 || err != nil {
		t.Fatalf("ReadPIDFile(missing) = %d, %v; want 0, nil", got, err)
	}
}
