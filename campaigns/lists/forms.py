from django import forms

from campaigns.lists.importing import ImportFailed, check_header, size_error
from campaigns.models import MailingList
from project.csv_files import not_csv


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
        if problem := not_csv(upload):
            raise forms.ValidationError(problem)
        if too_large := size_error(upload.size):
            raise forms.ValidationError(f"“{upload.name}” is too large: {too_large}. Split it into smaller files.")
        try:
            check_header(upload)
        except ImportFailed as exc:
            raise forms.ValidationError(f"Nothing can be imported: {exc}.") from None
        return upload
