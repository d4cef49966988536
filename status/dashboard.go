package status

import (
	"embed"
	"net/http"
)

// webFS holds the dashboard: one page, its stylesheet and its script, no
// third-party code, fonts or CDN (it works offline).
//
//go:embed web
var webFS embed.FS

func (s *Server) getDashboard(w http.ResponseWriter, r *http.Request) {
	b, err := webFS.ReadFile("web/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
