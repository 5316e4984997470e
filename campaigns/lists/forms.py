from pathlib import PurePath

from django import forms

from campaigns.lists.importing import ImportFailed, check_header, size_error
from campaigns.models import MailingList

CSV_SUFFIXES = (".csv", ".txt")


class MailingListForm(forms.ModelForm):
    class Meta:
        model = MailingList
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="A header row with an “email” column; “name” is optional, other columns become attributes.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,text/csv,text/plain"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if PurePath(upload.name).suffix.lower() not in CSV_SUFFIXES:
            raise forms.ValidationError(f"“{upload.name}” is not a .csv file. Save the sheet as CSV (UTF-8) first.")
        if too_large := size_error(upload.size):
            raise forms.ValidationError(f"“{upload.name}” is too large: {too_large}. Split it into smaller files.")
        start = upload.read(4096)
        upload.seek(0)
        # Spreadsheets (xlsx is a zip) and other binaries hold NUL bytes; text never does.
        if b"\x00" in start:
            raise forms.ValidationError(
                f"“{upload.name}” is not text (a spreadsheet?). Save the sheet as CSV (UTF-8) first."
            )
        try:
            check_header(upload)
        except ImportFailed as exc:
            raise forms.ValidationError(f"Nothing can be imported: {exc}.") from None
        return upload
